"""vidseg app without a browser: who gets in (token, Host, Origin, paths), the work folder and its jobs, bad input,
and the exported masks against `vidseg segment` with the same given masks."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the app extra is not installed: pip install -e '.[app]'")
pytest.importorskip("uvicorn", reason="the app extra is not installed: pip install -e '.[app]'")

from vidseg.app import jobs
from vidseg.app.server import AppServer
from vidseg.app.workspace import Workspace, WorkspaceBusy
from vidseg.cli.main import main
from vidseg.data.synth import make_demo_clip
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_demo_clip(tmp_path_factory.mktemp("clip"), seed=3, num_frames=14, size=(72, 120), num_objects=2)


@pytest.fixture
def server(tmp_path):
    running = AppServer(tmp_path / "work", max_upload=64 << 10).start()
    yield running
    running.close()


def request(server, method, path, body=None, headers=None, token=True):
    """(status, body bytes, headers) of one request; Host is the server's own unless ``headers`` says otherwise."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent = {"Host": f"127.0.0.1:{server.port}"}
    if token:
        sent["Authorization"] = f"token {server.token}"
    sent.update(headers or {})
    if isinstance(body, dict):
        body, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in sent.items():
        connection.putheader(key, value)
    connection.putheader("Content-Length", str(len(body or b"")))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data, response.headers


def error_of(data: bytes) -> str:
    return json.loads(data)["error"]


def open_clip(server, clip) -> dict:
    status, data, _ = request(server, "POST", "/api/open", {"path": str(clip.frames_dir)})
    assert status == 200, data
    return json.loads(data)


def wait_job(server, vid, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(request(server, "GET", f"/api/v/{vid}/job")[1])["job"]
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def segment_masks(clip, given_dir: Path, out: Path) -> dict[str, np.ndarray]:
    """The masks of `vidseg segment FRAMES --mask GIVEN --method flow`."""
    code = main(["segment", str(clip.frames_dir), "--mask", str(given_dir), "--method", "flow", "--out", str(out),
                 "--quiet", "--threads", "1"])
    assert code == 0
    return {p.name: read_mask(p) for p in sorted(out.glob("*.png"))}


# -- who gets in -----------------------------------------------------------------------------------------------


def test_binds_loopback_only(server):
    assert server.socket.getsockname()[0] == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")


def test_requests_without_the_token_are_refused(server):
    for path in ("/", "/api/state", "/static/app.js"):
        status, data, _ = request(server, "GET", path, token=False)
        assert status == 403 and "token" in error_of(data)
    status, _, _ = request(server, "GET", "/api/state", token=False, headers={"Authorization": "token wrong"})
    assert status == 403
    status, _, _ = request(server, "GET", "/api/state?token=wrong", token=False)
    assert status == 403


def test_the_token_in_the_address_sets_a_cookie_that_lets_in(server):
    status, page, headers = request(server, "GET", f"/?token={server.token}", token=False)
    assert status == 200 and b"<canvas" in page
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "default-src 'self'" in headers["content-security-policy"]
    status, _, _ = request(server, "GET", "/api/state", token=False, headers={"Cookie": cookie.split(";")[0]})
    assert status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost", "[::1]:{port}",
                                  "0.0.0.0:{port}"])
def test_other_host_headers_are_refused(server, host):
    status, data, _ = request(server, "GET", "/api/state", headers={"Host": host.format(port=server.port)})
    assert status == 403 and "host" in error_of(data)


def test_localhost_host_is_accepted_and_foreign_origins_refused(server):
    assert request(server, "GET", "/api/state", headers={"Host": f"localhost:{server.port}"})[0] == 200
    own = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert request(server, "GET", "/api/state", headers=own)[0] == 200
    status, data, _ = request(server, "POST", "/api/open", {"path": "/"}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in error_of(data)


def test_file_paths_cannot_leave_the_export_folder(server, clip, tmp_path):
    vid = open_clip(server, clip)["id"]
    secret = tmp_path / "work" / "secret.txt"
    secret.write_text("no")
    for path in ("../video.json", "../../secret.txt", "%2e%2e/%2e%2e/secret.txt", "..%2f..%2fsecret.txt",
                 "/etc/passwd", "%2Fetc%2Fpasswd"):
        status, data, _ = request(server, "GET", f"/api/v/{vid}/files/{path}")
        assert status == 404, (path, data)
    assert request(server, "GET", "/api/v/..%2F..%2F/job")[0] == 404
    assert request(server, "GET", "/static/../server.py")[0] == 404


def test_upload_names_stay_in_the_uploads_folder(server, tmp_path):
    status, data, _ = request(server, "POST", "/api/upload?name=../../escape.mp4", b"not a video at all")
    assert status == 400 and "cannot be read as a video" in error_of(data)
    assert not list(tmp_path.rglob("escape*"))
    assert not [p for p in (tmp_path / "work" / "uploads").iterdir()]  # refused: nothing left


def test_an_upload_opens_and_a_long_one_without_a_length_is_cut_off(server, clip, tmp_path):
    import cv2

    video = tmp_path / "my clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (120, 72))
    for path in sorted(clip.frames_dir.iterdir())[:4]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    status, data, _ = request(server, "POST", "/api/upload?name=my%20clip.avi", video.read_bytes())
    assert status == 200, data
    info = json.loads(data)
    assert len(info["frames"]) == 4 and Path(info["path"]).parent == tmp_path / "work" / "uploads"
    assert Path(info["path"]).name.startswith("my_clip-")
    deadline = time.monotonic() + 20  # the frames of a video file are decoded once, on a thread, for the page
    while json.loads(request(server, "GET", f"/api/v/{info['id']}")[1])["frames_ready"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, data, headers = request(server, "GET", f"/api/v/{info['id']}/frame/3")
    assert status == 200 and headers["content-type"] == "image/jpeg" and data[:2] == b"\xff\xd8"
    request(server, "PUT", f"/api/v/{info['id']}/given/1", np.full((72, 120), 1, np.uint8).tobytes())
    status, data, _ = request(server, "POST", "/api/upload?name=my%20clip.avi", video.read_bytes())
    assert status == 200 and json.loads(data)["given"] == [1]  # the same upload again: the same work folder
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"x" * 8192 for _ in range(12))  # 96 KB, chunked: the limit is found while reading
    connection.request("POST", "/api/upload?name=long.mp4", body=chunks, encode_chunked=True,
                       headers={"Authorization": f"token {server.token}"})
    response = connection.getresponse()
    assert response.status == 413 and "64 KB" in error_of(response.read())
    connection.close()
    assert sorted(p.name for p in (tmp_path / "work" / "uploads").iterdir()) == [Path(info["path"]).name]


# -- bad input -------------------------------------------------------------------------------------------------


def test_bad_input_gets_one_line_and_leaves_nothing(server, clip, tmp_path):
    status, data, _ = request(server, "POST", "/api/upload?name=notes.txt", b"hello")
    assert status == 400 and "not a video file" in error_of(data)
    status, data, _ = request(server, "POST", "/api/upload?name=big.mp4", b"x" * (65 << 10))
    assert status == 413 and "over the upload limit of 64 KB" in error_of(data)
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    status, data, _ = request(server, "POST", "/api/open", {"path": str(tmp_path / "missing.mp4")})
    assert status == 400 and "video not found" in error_of(data)
    vid = open_clip(server, clip)["id"]
    status, data, _ = request(server, "POST", f"/api/v/{vid}/propagate", {"method": "no-such-method"})
    assert status == 400 and "unknown method 'no-such-method'" in error_of(data) and "flow" in error_of(data)
    status, data, _ = request(server, "POST", f"/api/v/{vid}/propose", {"method": "flow"})
    assert status == 400 and "zero-shot" in error_of(data)
    status, data, _ = request(server, "PUT", f"/api/v/{vid}/given/0", b"\x01" * 10)
    assert status == 400 and "120x72" in error_of(data)
    assert request(server, "PUT", f"/api/v/{vid}/given/99", b"\x01" * (72 * 120))[0] == 400
    assert request(server, "GET", "/api/v/unknown-video/job")[0] == 404
    request(server, "POST", f"/api/v/{vid}/propagate", {"method": "flow"})
    job = wait_job(server, vid)
    assert job["state"] == "failed" and "no object is painted yet" in job["message"]
    status, data, _ = request(server, "POST", f"/api/v/{vid}/export", b"")
    assert wait_job(server, vid)["state"] == "failed"
    assert not (tmp_path / "work" / vid / "export").exists()
    assert not list((tmp_path / "work" / vid).glob(".export-*"))


def test_cli_without_the_web_extra_says_how_to_install(monkeypatch, capsys):
    import vidseg.cli.app as cli_app

    monkeypatch.setattr(cli_app, "_missing_web_stack", lambda: "starlette")
    assert main(["app", "--no-browser"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and 'pip install -e ".[app]"' in error


def test_static_files_fetch_nothing_from_elsewhere():
    static = Path(jobs.__file__).parent / "static"
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name


# -- the work folder, jobs, and equality with segment ----------------------------------------------------------


def test_propagate_correct_export_equals_segment(server, clip, tmp_path):
    info = open_clip(server, clip)
    vid, folder = info["id"], Path(info["folder"])
    first = read_mask(clip.first_mask)
    assert request(server, "PUT", f"/api/v/{vid}/given/0", first.tobytes())[0] == 200
    assert request(server, "POST", f"/api/v/{vid}/propagate", {"method": "flow"})[0] == 200
    assert wait_job(server, vid)["state"] == "finished"
    # Correct frame 9: the propagated mask with object 2 grown by a block and a new object 3.
    status, data, headers = request(server, "GET", f"/api/v/{vid}/mask/9", headers={"Accept-Encoding": "gzip"})
    assert headers["x-mask-kind"] == "result"
    import gzip

    corrected = np.frombuffer(gzip.decompress(data), np.uint8).reshape(72, 120).copy()
    corrected[10:30, 10:40] = 2
    corrected[50:65, 80:110] = 3
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "masks").glob("*.png")}
    info = json.loads(request(server, "PUT", f"/api/v/{vid}/given/9", corrected.tobytes())[1])
    assert info["given"] == [0, 9] and info["done"] == 9
    request(server, "POST", f"/api/v/{vid}/propagate", {"method": "flow"})
    job = wait_job(server, vid)
    assert job["state"] == "finished" and job["done"] == 14
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "masks").glob("*.png")}
    assert all(after[f"{i:05d}.png"] == before[f"{i:05d}.png"] for i in range(9))  # frames before 9 are kept
    request(server, "POST", f"/api/v/{vid}/export", b"")
    assert wait_job(server, vid)["state"] == "finished"
    export = folder / "export"
    assert sorted(p.name for p in (export / "given").iterdir()) == ["00000.png", "00009.png"]
    assert (export / "overlay.mp4").stat().st_size > 0
    command = (export / "command.txt").read_text()
    assert f"--mask {export / 'given'} --method flow" in command
    expected = segment_masks(clip, export / "given", tmp_path / "segment")
    exported = {p.name: read_mask(p) for p in sorted((export / "masks").glob("*.png"))}
    assert exported.keys() == expected.keys() and len(exported) == 14
    for name, mask in expected.items():
        assert np.array_equal(exported[name], mask), name
    assert 3 in np.unique(exported["00013.png"])  # the correction was carried forward
    status, data, _ = request(server, "GET", f"/api/v/{vid}/files/overlay.mp4")
    assert status == 200 and len(data) > 0


def test_a_zero_shot_method_proposes_objects(server, clip):
    vid = open_clip(server, clip)["id"]
    status, data, headers = request(server, "GET", f"/api/v/{vid}/mask/2")
    assert status == 200 and headers["x-mask-kind"] == "none" and data == b""
    assert request(server, "POST", f"/api/v/{vid}/propose", {"method": "rvos", "frame": 2})[0] == 200
    job = wait_job(server, vid)
    assert job["state"] == "finished" and job["result"]["frame"] == 2 and "propose" in job["message"]
    import gzip

    status, data, headers = request(server, "GET", f"/api/v/{vid}/proposal")
    assert status == 200 and headers["x-mask-kind"] == "proposal" and len(gzip.decompress(data)) == 72 * 120


def test_repropagation_resumes_from_a_snapshot_and_equals_segment(clip, tmp_path):
    workspace = Workspace(tmp_path / "work", clip.frames_dir, snapshot_every=4)
    workspace.save_given(0, read_mask(clip.first_mask))
    run(workspace)
    assert sorted(int(p.stem) for p in workspace.snapshots_dir.glob("*.npz")) == [3, 7, 11]
    corrected = read_mask(workspace.result_path(10))
    corrected[:20, :20] = 4
    workspace.save_given(10, corrected)
    assert workspace.run_record()["done"] == 10
    assert sorted(int(p.stem) for p in workspace.snapshots_dir.glob("*.npz")) == [3, 7]  # 11 saw the old frame 10
    job = run(workspace)
    assert job.done == 14 and job.computed == 6  # frames 8..13: from the snapshot after frame 7, not from frame 0
    expected = segment_masks(clip, workspace.given_dir, tmp_path / "segment")
    for index, name in enumerate(workspace.frame_names):
        assert np.array_equal(read_mask(workspace.result_path(index)), expected[f"{name}.png"]), name


def test_a_stopped_run_keeps_complete_masks_and_continues(clip, tmp_path):
    workspace = Workspace(tmp_path / "work", clip.frames_dir, snapshot_every=4)
    workspace.save_given(0, read_mask(clip.first_mask))
    job = jobs.Job("propagate", lambda job: jobs.propagate(workspace, "flow", job))
    original = job.advance

    def stop_after_six(done: int, computed: bool = True) -> None:
        original(done, computed)
        if done == 6:
            job.stop("stopped by the user")

    job.advance = stop_after_six
    job.start().join()
    assert job.state == "stopped" and workspace.run_record()["done"] == 6
    assert not list(workspace.folder.rglob(".*.tmp.*"))
    run(workspace)
    expected = segment_masks(clip, workspace.given_dir, tmp_path / "segment")
    for index, name in enumerate(workspace.frame_names):
        assert np.array_equal(read_mask(workspace.result_path(index)), expected[f"{name}.png"]), name


def test_a_closed_tab_stops_the_run_with_a_message(clip, tmp_path):
    workspace = Workspace(tmp_path / "work", clip.frames_dir)
    workspace.save_given(0, read_mask(clip.first_mask))
    job = jobs.Job("propagate", lambda job: jobs.propagate(workspace, "flow", job), heartbeat=0.0)
    job.start().join()
    assert job.state == "stopped" and "tab was closed" in job.message
    assert workspace.run_record()["done"] == 0 and not list(workspace.masks_dir.glob("*"))


def test_a_method_change_recomputes_everything(clip, tmp_path):
    workspace = Workspace(tmp_path / "work", clip.frames_dir, snapshot_every=4)
    workspace.save_given(0, read_mask(clip.first_mask))
    run(workspace)
    assert workspace.begin_run("match") == 0 and not list(workspace.snapshots_dir.glob("*.npz"))


def test_removing_an_object_erases_it_from_every_given_mask(clip, tmp_path):
    workspace = Workspace(tmp_path / "work", clip.frames_dir)
    first = read_mask(clip.first_mask)
    workspace.save_given(0, first)
    later = np.zeros_like(first)
    later[5:15, 5:15] = 2
    workspace.save_given(5, later)
    workspace.remove_object(2)
    assert workspace.given_frames() == [0]  # frame 5 held object 2 only
    assert 2 not in np.unique(read_mask(workspace.given_path(0)))
    with pytest.raises(VidsegError, match="1..254"):
        workspace.remove_object(255)


def test_two_writers_on_one_video_do_not_interleave(server, clip, tmp_path):
    vid = open_clip(server, clip)["id"]
    workspace = server.state.workspaces[vid]
    other = Workspace(tmp_path / "work", clip.frames_dir)  # another server on the same folder
    with other.locked():
        status, data, _ = request(server, "PUT", f"/api/v/{vid}/given/0", read_mask(clip.first_mask).tobytes())
        assert status == 409 and "another vidseg app" in error_of(data)
    release = threading.Event()
    server.state.start(workspace, "propagate", lambda job: release.wait(10) and "done")
    try:  # a second tab asks for a second job on the same video
        status, data, _ = request(server, "POST", f"/api/v/{vid}/propagate", {"method": "flow"})
        assert status == 409 and "another tab" in error_of(data)
    finally:
        release.set()
    with workspace.locked(), pytest.raises(WorkspaceBusy), workspace.locked():
        pass


def test_a_changed_video_starts_a_fresh_folder(clip, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted(clip.frames_dir.iterdir())[:5]:
        (frames / path.name).write_bytes(path.read_bytes())
    workspace = Workspace(tmp_path / "work", frames)
    workspace.save_given(0, read_mask(clip.first_mask))
    (frames / "00004.jpg").unlink()
    again = Workspace(tmp_path / "work", frames)
    assert again.folder == workspace.folder and again.given_frames() == []


def run(workspace: Workspace) -> jobs.Job:
    job = jobs.Job("propagate", lambda job: jobs.propagate(workspace, "flow", job), heartbeat=None)
    job.start().join()
    assert job.state == "finished", job.message
    return job

