// vidseg app: scrub a video, paint object ids on a canvas, drive propagation / proposals / export on the server.
// Masks are width*height bytes of object ids (0 background, 1..254 objects, 255 void), as the server sends them.
"use strict";

const $ = (id) => document.getElementById(id);
const frameCanvas = $("frame"), overlay = $("overlay"), timeline = $("timeline");

// The DAVIS / PASCAL VOC palette: the bits of an id spread over the high bits of r, g, b.
const PALETTE = Array.from({ length: 256 }, (_, id) => {
  let r = 0, g = 0, b = 0;
  for (let bit = 0, code = id; bit < 8; bit++, code >>= 3) {
    r |= (code & 1) << (7 - bit); g |= ((code >> 1) & 1) << (7 - bit); b |= ((code >> 2) & 1) << (7 - bit);
  }
  return [r, g, b];
});

const app = {
  video: null,        // the server's info on the open video
  index: 0,           // the frame shown
  wanted: 0,          // the frame asked for last (shown once its image and mask arrive)
  showRequests: 0,    // counts show() calls: only the latest may draw
  ids: null,          // Uint8Array of the shown (or edited) mask
  kind: "none",       // what the shown mask is: result | given | stale | none | proposal
  dirty: false,       // the mask was painted and not saved
  objects: new Set(), // ids listed in the object panel
  current: 1,         // the id the brush paints
  polygon: [],        // points of the polygon being drawn
  polling: null,
  pollInFlight: false,
  followedJob: null,
  methods: null,
};

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = text ? kind : "";
}

async function call(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let text = response.statusText;
    try { text = (await response.json()).error || text; } catch (_) { /* not JSON: keep the status text */ }
    throw new Error(text);
  }
  return response;
}

const jsonCall = async (path, body, method = "POST") =>
  (await call(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
const videoPath = (rest = "") => `/api/v/${encodeURIComponent(app.video.id)}${rest}`;

async function guarded(action) {
  try { await action(); } catch (error) { say(error.message, "error"); }
}

// -- opening a video ---------------------------------------------------------------------------------------------

async function openVideo(info) {
  app.video = info;
  for (const canvas of [frameCanvas, overlay]) { canvas.width = info.width; canvas.height = info.height; }
  $("slider").max = info.frames.length - 1;
  $("video-name").textContent = `${info.name} (${info.frames.length} frames, ${info.width}x${info.height})`;
  app.objects = new Set();
  app.dirty = false;
  await show(0);
  drawTimeline();
  if (info.job) report(info.job);
  if (info.job && info.job.state === "running") follow(info.job.kind);
}

$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    if (!confirmLeave()) return;
    say("opening...");
    await openVideo(await jsonCall("/api/open", { path: $("path").value }));
    say("");
  });
});

$("upload").addEventListener("change", () => guarded(async () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file || !confirmLeave()) return;
  if (file.size > app.methods.max_upload) {
    throw new Error(`${file.name} is over the upload limit of ${app.methods.max_upload >> 20} MB: open it by its path`);
  }
  say(`uploading ${file.name}...`);
  const response = await call(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  await openVideo(await response.json());
  say("");
}));

// -- showing a frame ---------------------------------------------------------------------------------------------

function loadImage(url, tries = 40) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => (tries > 0 ? setTimeout(() => loadImage(url, tries - 1).then(resolve, reject), 500)
      : reject(new Error("this frame cannot be shown (still decoding? see the server's terminal)")));
    image.src = url;
  });
}

async function fetchMask(path) {
  const response = await call(path);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const size = app.video.width * app.video.height;
  return { ids: bytes.length === size ? bytes : new Uint8Array(size), kind: response.headers.get("X-Mask-Kind") };
}

function confirmLeave() {
  if (!app.dirty) return true;
  say("this frame has an unsaved edit: save it or discard it first", "error");
  return false;
}

async function show(index) {
  if (!app.video) return;
  index = Math.max(0, Math.min(app.video.frames.length - 1, index));
  const request = ++app.showRequests;
  app.wanted = index;
  const [image, mask] = await Promise.all([loadImage(videoPath(`/frame/${index}`)), fetchMask(videoPath(`/mask/${index}`))]);
  // A poll's show and the user's can overlap: the one asked for last wins, whichever arrives last.
  if (request !== app.showRequests) return;
  app.index = index;
  frameCanvas.getContext("2d").drawImage(image, 0, 0);
  app.ids = mask.ids;
  app.kind = mask.kind;
  app.dirty = false;
  app.polygon = [];
  $("slider").value = index;
  $("frame-label").textContent = `frame ${index + 1} / ${app.video.frames.length} (${app.video.frames[index]})`;
  collectObjects();
  drawMask();
}

function go(index) {
  if (confirmLeave()) guarded(() => show(index));
}

$("slider").addEventListener("input", () => go(Number($("slider").value)));
$("prev").addEventListener("click", () => go(app.index - 1));
$("next").addEventListener("click", () => go(app.index + 1));

function drawMask() {
  const context = overlay.getContext("2d");
  const image = context.createImageData(overlay.width, overlay.height);
  const pixels = image.data, ids = app.ids;
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] === 0) continue;
    const colour = PALETTE[ids[i]];
    pixels[4 * i] = colour[0]; pixels[4 * i + 1] = colour[1]; pixels[4 * i + 2] = colour[2]; pixels[4 * i + 3] = 140;
  }
  context.putImageData(image, 0, 0);
  if (app.polygon.length) {
    context.strokeStyle = "white"; context.lineWidth = Math.max(1, overlay.width / 400);
    context.beginPath();
    app.polygon.forEach(([x, y], k) => (k ? context.lineTo(x, y) : context.moveTo(x, y)));
    context.stroke();
  }
  const kinds = { result: "propagated", given: "painted (given mask)", stale: "older result: propagate again",
                  none: "no mask", proposal: "proposal: keep or remove objects, then save" };
  $("mask-kind").textContent = app.dirty ? "edited, not saved" : kinds[app.kind] || app.kind;
}

function drawTimeline() {
  if (!app.video) return;
  const count = app.video.frames.length;
  timeline.width = Math.max(count, 200);
  const context = timeline.getContext("2d"), step = timeline.width / count;
  context.clearRect(0, 0, timeline.width, timeline.height);
  context.fillStyle = "#2f8f46";
  context.fillRect(0, 0, app.video.done * step, timeline.height);
  context.fillStyle = "white";
  for (const index of app.video.given) context.fillRect(index * step, 0, Math.max(step, 2), timeline.height);
  context.fillStyle = "#e0c040";
  context.fillRect(app.index * step, timeline.height - 3, Math.max(step, 2), 3);
}

// -- objects -----------------------------------------------------------------------------------------------------

function collectObjects() {
  for (const id of app.ids) if (id > 0 && id < 255) app.objects.add(id);
  if (!app.objects.size) app.objects.add(1);
  if (!app.objects.has(app.current)) app.current = Math.min(...app.objects);
  drawObjects();
}

function drawObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const id of [...app.objects].sort((a, b) => a - b)) {
    const item = document.createElement("li");
    item.className = id === app.current ? "selected" : "";
    item.dataset.id = id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${PALETTE[id].join(",")})`;
    const remove = document.createElement("button");
    remove.className = "remove"; remove.textContent = "remove"; remove.title = "erase from every painted mask";
    remove.addEventListener("click", (event) => { event.stopPropagation(); guarded(() => removeObject(id)); });
    item.append(swatch, `object ${id}`, remove);
    item.addEventListener("click", () => { app.current = id; drawObjects(); });
    list.append(item);
  }
}

$("add-object").addEventListener("click", () => {
  let id = 1;
  while (app.objects.has(id) && id < 254) id++;
  app.objects.add(id);
  app.current = id;
  drawObjects();
});

async function removeObject(id) {
  for (let i = 0; i < app.ids.length; i++) if (app.ids[i] === id) app.ids[i] = 0;
  app.objects.delete(id);
  if (app.video.given.length) app.video = await (await call(videoPath(`/object/${id}`), { method: "DELETE" })).json();
  if (app.kind !== "proposal") app.dirty = true;
  collectObjects();
  drawMask();
  drawTimeline();
  say(`object ${id} removed from every painted mask; save this frame and propagate again`);
}

// -- painting ----------------------------------------------------------------------------------------------------

const tool = () => document.querySelector("input[name=tool]:checked").value;

function point(event) {
  const box = overlay.getBoundingClientRect();
  return [(event.clientX - box.left) * overlay.width / box.width, (event.clientY - box.top) * overlay.height / box.height];
}

function dab(x, y, value) {
  const radius = Number($("size").value) * overlay.width / overlay.getBoundingClientRect().width / 2;
  const width = overlay.width, height = overlay.height;
  for (let row = Math.max(0, Math.floor(y - radius)); row <= Math.min(height - 1, y + radius); row++) {
    for (let col = Math.max(0, Math.floor(x - radius)); col <= Math.min(width - 1, x + radius); col++) {
      if ((col - x) ** 2 + (row - y) ** 2 <= radius * radius) app.ids[row * width + col] = value;
    }
  }
}

function stroke(from, to, value) {
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1])));
  for (let k = 0; k <= steps; k++) dab(from[0] + (to[0] - from[0]) * k / steps, from[1] + (to[1] - from[1]) * k / steps, value);
}

function edited() {
  app.dirty = true;
  app.objects.add(app.current);
  drawMask();
}

let last = null;
overlay.addEventListener("pointerdown", (event) => {
  if (!app.video || busy()) return;
  const at = point(event);
  if (tool() === "polygon") {
    app.polygon.push(at);
    drawMask();
    return;
  }
  overlay.setPointerCapture(event.pointerId);
  last = at;
  stroke(at, at, tool() === "eraser" ? 0 : app.current);
  edited();
});
overlay.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const at = point(event);
  stroke(last, at, tool() === "eraser" ? 0 : app.current);
  last = at;
  edited();
});
overlay.addEventListener("pointerup", () => { last = null; });
overlay.addEventListener("dblclick", () => closePolygon());

function closePolygon() {
  if (app.polygon.length < 3) return;
  const scratch = document.createElement("canvas");
  scratch.width = overlay.width; scratch.height = overlay.height;
  const context = scratch.getContext("2d");
  context.fillStyle = "white";
  context.beginPath();
  app.polygon.forEach(([x, y], k) => (k ? context.lineTo(x, y) : context.moveTo(x, y)));
  context.fill();
  const alpha = context.getImageData(0, 0, scratch.width, scratch.height).data;
  for (let i = 0; i < app.ids.length; i++) if (alpha[4 * i + 3] >= 128) app.ids[i] = app.current;
  app.polygon = [];
  edited();
}

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" && event.target.type === "text") return;
  const keys = { b: "brush", e: "eraser", p: "polygon" };
  if (keys[event.key]) document.querySelector(`input[name=tool][value=${keys[event.key]}]`).checked = true;
  else if (event.key === "Enter") closePolygon();
  else if (event.key === "Escape") { app.polygon = []; drawMask(); }
  else if (event.key === "ArrowLeft") go(app.index - 1);
  else if (event.key === "ArrowRight") go(app.index + 1);
});

async function save() {
  if (!app.dirty) return;
  const response = await call(videoPath(`/given/${app.index}`), { method: "PUT", body: app.ids });
  app.video = await response.json();
  app.dirty = false;
  app.kind = app.video.given.includes(app.index) ? "given" : "none";
  drawMask();
  drawTimeline();
}

$("save").addEventListener("click", () => guarded(async () => {
  app.dirty = app.dirty || app.kind === "proposal";
  await save();
  say(`frame ${app.index + 1} saved as a given mask; propagate to carry it forward`);
}));
$("discard").addEventListener("click", () => { app.dirty = false; guarded(() => show(app.index)); });

// -- jobs: propagate, propose, export ----------------------------------------------------------------------------

const busy = () => app.polling !== null;

function report(job) {
  const share = job.total ? job.done / job.total : 0;
  $("progress").value = share;
  const rate = job.fps ? `, ${job.fps.toFixed(1)} frames/s` : "";
  $("progress-text").textContent = `${job.kind}: ${job.done} / ${job.total} frames${rate} -- ${job.state}`;
  if (job.state === "failed") say(job.message, "error");
  else if (job.state !== "running" && job.message) say(job.message, job.state === "stopped" ? "error" : "info");
}

function follow(kind) {
  app.followedJob = kind;
  for (const id of ["propagate", "propose", "export", "save"]) $(id).disabled = true;
  $("stop").disabled = false;
  clearInterval(app.polling);
  app.polling = setInterval(pollOnce, 400);
}

async function pollOnce() {
  // Polls never overlap: a slow one still drawing would otherwise let the next also see the job finish and move
  // the view after the user has.
  if (app.pollInFlight) return;
  app.pollInFlight = true;
  await guarded(poll);
  app.pollInFlight = false;
}

async function poll() {
  const info = await (await call(videoPath("/job"))).json();
  app.video = info;
  const job = info.job;
  report(job);
  drawTimeline();
  const running = job.state === "running";
  if (!running) {  // the buttons come back with the job's message: a click right after it must not be lost
    clearInterval(app.polling);
    app.polling = null;
    for (const id of ["propagate", "propose", "export", "save"]) $(id).disabled = false;
    $("stop").disabled = true;
  }
  if (job.kind === "propagate" && !app.dirty) {
    const target = $("follow").checked ? Math.max(0, job.done - 1) : app.wanted;
    if (target !== app.wanted || (app.kind !== "result" && app.wanted < info.done)) await show(target);
  }
  if (running || job.state !== "finished") return;
  if (job.kind === "propose") await loadProposal(job.result.frame);
  if (job.kind === "export") await showExport();
  if (job.kind === "propagate") await show(app.wanted);
}

async function loadProposal(index) {
  await show(index);
  const mask = await fetchMask(videoPath("/proposal"));
  app.ids = mask.ids;
  app.kind = "proposal";
  app.objects = new Set();
  collectObjects();
  drawMask();
}

async function showExport() {
  const command = await (await call(videoPath("/files/command.txt"))).text();
  const box = $("export-result");
  box.replaceChildren();
  const link = document.createElement("a");
  link.href = videoPath("/files/overlay.mp4"); link.textContent = "overlay.mp4"; link.target = "_blank";
  const folder = document.createElement("div");
  folder.textContent = `masks/, given/ and overlay.mp4 in ${app.video.folder}/export`;
  const code = document.createElement("code");
  code.textContent = command.trim();
  box.append(folder, link, " -- the same masks again:", code);
}

$("propagate").addEventListener("click", () => guarded(async () => {
  if (app.dirty) await save();
  app.video = await jsonCall(videoPath("/propagate"), { method: $("method").value });
  say(`propagating with ${$("method").value}...`);
  follow("propagate");
}));

$("propose").addEventListener("click", () => guarded(async () => {
  if (!confirmLeave()) return;
  app.video = await jsonCall(videoPath("/propose"), { method: $("zero-shot").value, frame: app.index });
  say(`${$("zero-shot").value} is looking for objects up to frame ${app.index + 1}...`);
  follow("propose");
}));

$("export").addEventListener("click", () => guarded(async () => {
  app.video = await jsonCall(videoPath("/export"), {});
  say("exporting...");
  follow("export");
}));

$("stop").addEventListener("click", () => guarded(() => call(videoPath("/stop"), { method: "POST" })));

// -- start -------------------------------------------------------------------------------------------------------

function fillSelect(select, names, chosen) {
  for (const name of names) select.append(new Option(name, name, name === chosen, name === chosen));
}

guarded(async () => {
  app.methods = await (await call("/api/state")).json();
  fillSelect($("method"), app.methods.methods, app.methods.default);
  fillSelect($("zero-shot"), app.methods.zero_shot, app.methods.zero_shot_default);
  $("propose").disabled = !app.methods.zero_shot.length;
  if (app.methods.initial) await openVideo(await (await call(`/api/v/${app.methods.initial}`)).json());
  else say("open a video by its path, or upload one");
});
