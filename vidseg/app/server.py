"""The app's HTTP server: the page, its static files, and a JSON API over the work folders and jobs.

Masks travel as raw bytes, one object id per pixel in row order (``width * height`` bytes, gzip on the way
down): exact, and simple for the page's canvas code. Errors are ``{"error": one line}`` with 400 (bad input),
403 (:mod:`vidseg.app.security`), 404, 409 (the video is busy) or 413 (an upload over the limit).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidseg.app import jobs
from vidseg.app.jobs import Job
from vidseg.app.security import LocalOnly, new_token
from vidseg.app.workspace import Workspace, WorkspaceBusy
from vidseg.errors import VidsegError
from vidseg.inference.methods import choose_default_method, runnable_methods
from vidseg.io.video import VIDEO_SUFFIXES

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_MB = 2048
_PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self'; style-src 'self'; "
                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")  # nothing from elsewhere


class AppState:
    """The open videos (one :class:`Workspace` each, under ``root``) and each one's current job."""

    def __init__(self, root: str | Path, max_upload: int = DEFAULT_MAX_UPLOAD_MB << 20,
                 heartbeat: float | None = jobs.HEARTBEAT_SECONDS):
        self.root = Path(root).expanduser().resolve()
        self.max_upload = max_upload
        self.heartbeat = heartbeat
        self.initial: str | None = None
        self.workspaces: dict[str, Workspace] = {}
        self.jobs: dict[str, Job] = {}
        self.decode_errors: dict[str, str] = {}
        self.closing = threading.Event()
        self._lock = threading.Lock()

    def open(self, video: str | Path) -> Workspace:
        workspace = Workspace(self.root, video)
        with self._lock:
            known = self.workspaces.setdefault(workspace.id, workspace)  # one object per folder: one lock
        if known is workspace:
            threading.Thread(target=self._decode, args=(workspace,), daemon=True).start()
        return known

    def _decode(self, workspace: Workspace) -> None:
        try:
            workspace.decode_frames(self.closing)
        except (VidsegError, OSError) as exc:
            self.decode_errors[workspace.id] = str(exc)

    def workspace(self, vid: str) -> Workspace:
        if vid not in self.workspaces:
            raise HTTPException(404, "no such video is open: open it again")
        return self.workspaces[vid]

    def start(self, workspace: Workspace, kind: str, work: Callable[[Job], str]) -> Job:
        with self._lock:
            current = self.jobs.get(workspace.id)
            if current is not None and current.running:
                raise WorkspaceBusy(f"a {current.kind} job is running on this video (maybe in another tab)",
                                    fix="wait for it or press Stop")
            job = Job(kind, work, heartbeat=self.heartbeat)
            self.jobs[workspace.id] = job
        return job.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop every job at its next frame and wait: what they leave is complete."""
        self.closing.set()
        for job in list(self.jobs.values()):
            job.stop("stopped: the server was closed")
        for job in list(self.jobs.values()):
            job.join(timeout)

    def info(self, workspace: Workspace) -> dict[str, Any]:
        job = self.jobs.get(workspace.id)
        return {**workspace.info(), "job": None if job is None else job.status(),
                "decode_error": self.decode_errors.get(workspace.id)}


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise VidsegError("the request is not JSON") from None
    if not isinstance(body, dict):
        raise VidsegError("the request is not a JSON object")
    return body


def _mask_response(mask: np.ndarray | None, kind: str) -> Response:
    data = b"" if mask is None else gzip.compress(np.ascontiguousarray(mask).tobytes(), compresslevel=1)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Encoding": "gzip", "X-Mask-Kind": kind, "Cache-Control": "no-store"})


def build_app(state: AppState, port: int, token: str) -> Starlette:
    """The Starlette application (behind :class:`LocalOnly` for ``port`` and ``token``)."""

    def index(request: Request) -> Response:
        page = (STATIC / "index.html").read_text()
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy": _PAGE_POLICY})

    def app_state(request: Request) -> Response:
        methods = runnable_methods()
        zero_shot = runnable_methods(zero_shot=True)
        return JSONResponse({"methods": methods, "default": choose_default_method().name, "zero_shot": zero_shot,
                             "zero_shot_default": zero_shot and choose_default_method(zero_shot=True).name,
                             "initial": state.initial, "max_upload": state.max_upload,
                             "suffixes": list(VIDEO_SUFFIXES)})

    async def open_path(request: Request) -> Response:
        path = (await _json(request)).get("path")
        if not isinstance(path, str) or not path.strip():
            raise VidsegError("give the path of a video file or a folder of frames")
        workspace = await run_in_threadpool(state.open, path.strip())
        return JSONResponse(state.info(workspace))

    async def upload(request: Request) -> Response:
        workspace = await _receive_upload(request, state)
        return JSONResponse(state.info(workspace))

    def video(request: Request) -> Response:
        return JSONResponse(state.info(state.workspace(request.path_params["vid"])))

    def frame(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        path = workspace.frame_file(request.path_params["index"])
        if path is None:
            raise HTTPException(404, "this frame is not decoded yet")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    def mask(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        return _mask_response(*workspace.display_mask(workspace.frame_index(request.path_params["index"])))

    async def given(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        index = workspace.frame_index(request.path_params["index"])
        body = await request.body()
        if len(body) != workspace.reader.width * workspace.reader.height:
            raise VidsegError(f"a mask must be {workspace.reader.width}x{workspace.reader.height} bytes of ids")
        ids = np.frombuffer(body, np.uint8).reshape(workspace.reader.size)
        await run_in_threadpool(workspace.save_given, index, ids.copy())
        return JSONResponse(state.info(workspace))

    def remove_object(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        workspace.remove_object(request.path_params["object_id"])
        return JSONResponse(state.info(workspace))

    async def propagate(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        method = (await _json(request)).get("method") or choose_default_method(
            zero_shot=not workspace.given_frames()).name
        jobs.check_method(str(method))
        state.start(workspace, "propagate", lambda job: jobs.propagate(workspace, str(method), job))
        return JSONResponse(state.info(workspace))

    async def propose(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        body = await _json(request)
        method = body.get("method") or choose_default_method(zero_shot=True).name
        jobs.check_method(str(method), zero_shot=True)
        index = body.get("frame", 0)
        if not isinstance(index, int):
            raise VidsegError("frame must be a frame number")
        workspace.frame_index(index)
        state.start(workspace, "propose", lambda job: jobs.propose(workspace, str(method), index, job))
        return JSONResponse(state.info(workspace))

    def proposal(request: Request) -> Response:
        from vidseg.io.masks import read_mask

        workspace = state.workspace(request.path_params["vid"])
        path = workspace.folder / "proposal.png"
        if not path.is_file():
            raise HTTPException(404, "no proposal yet")
        return _mask_response(read_mask(path), "proposal")

    def export(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        state.start(workspace, "export", lambda job: jobs.export(workspace, job))
        return JSONResponse(state.info(workspace))

    def job(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        current = state.jobs.get(workspace.id)
        if current is not None:
            current.seen()
        return JSONResponse(state.info(workspace))

    def stop(request: Request) -> Response:
        workspace = state.workspace(request.path_params["vid"])
        current = state.jobs.get(workspace.id)
        if current is not None:
            current.stop("stopped by the user")
        return JSONResponse(state.info(workspace))

    def export_file(request: Request) -> Response:
        """A file of the video's ``export/`` folder, nothing outside it."""
        workspace = state.workspace(request.path_params["vid"])
        folder = workspace.export_dir.resolve()
        target = (folder / request.path_params["path"]).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise HTTPException(404, "no such exported file")
        return FileResponse(target)

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        status = 409 if isinstance(exc, WorkspaceBusy) else 413 if isinstance(exc, TooLarge) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    vid = "/api/v/{vid}"
    routes = [
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/state", app_state),
        Route("/api/open", open_path, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route(vid, video),
        Route(vid + "/frame/{index:int}", frame),
        Route(vid + "/mask/{index:int}", mask),
        Route(vid + "/given/{index:int}", given, methods=["PUT"]),
        Route(vid + "/object/{object_id:int}", remove_object, methods=["DELETE"]),
        Route(vid + "/propagate", propagate, methods=["POST"]),
        Route(vid + "/propose", propose, methods=["POST"]),
        Route(vid + "/proposal", proposal),
        Route(vid + "/export", export, methods=["POST"]),
        Route(vid + "/job", job),
        Route(vid + "/stop", stop, methods=["POST"]),
        Route(vid + "/files/{path:path}", export_file),
    ]
    return Starlette(routes=routes, middleware=[Middleware(LocalOnly, port=port, token=token)],
                     exception_handlers={HTTPException: refused, VidsegError: refused})


class TooLarge(VidsegError):
    """An upload over the server's limit."""


async def _receive_upload(request: Request, state: AppState) -> Workspace:
    """Stream the body into ``ROOT/uploads/<stem>-<hash><suffix>`` (a partial file never keeps that name) and open
    it; a file that is not a video, or over the limit, is deleted and refused."""
    name = request.query_params.get("name", "")
    suffix = Path(name).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise VidsegError(f"{Path(name).name or 'the file'} is not a video file",
                          fix=f"upload a {', '.join(VIDEO_SUFFIXES)} file, or open a folder of frames by its path")
    limit = f"{state.max_upload >> 20} MB" if state.max_upload >= 1 << 20 else f"{state.max_upload >> 10} KB"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > state.max_upload:
        raise TooLarge(f"the file is over the upload limit of {limit}",
                       fix="open it by its path instead, or restart with a larger --max-upload")
    folder = state.root / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".upload-{secrets.token_hex(6)}{suffix}"
    digest, size = hashlib.sha1(), 0
    handle = await run_in_threadpool(open, part, "wb")
    try:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > state.max_upload:
                    raise TooLarge(f"the file is over the upload limit of {limit}",
                                   fix="open it by its path instead, or restart with a larger --max-upload")
                digest.update(chunk)
                await run_in_threadpool(handle.write, chunk)  # the event loop keeps serving other requests
        finally:
            handle.close()
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(Path(name).name).stem)[:40].strip(".") or "video"
        target = folder / f"{stem}-{digest.hexdigest()[:8]}{suffix}"
        if not target.is_file():  # the same file uploaded again keeps its work folder (a new mtime would reset it)
            part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    try:
        return await run_in_threadpool(state.open, target)
    except VidsegError as exc:
        target.unlink(missing_ok=True)
        raise VidsegError(f"{Path(name).name} cannot be read as a video ({exc})") from None


class AppServer:
    """The app on ``127.0.0.1:port`` (0: a free one) with a fresh token; :meth:`run` serves until Ctrl-C,
    :meth:`start` on a thread (tests)."""

    def __init__(self, root: str | Path, port: int = 0, max_upload: int = DEFAULT_MAX_UPLOAD_MB << 20,
                 heartbeat: float | None = jobs.HEARTBEAT_SECONDS):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(("127.0.0.1", port))
        except OSError as exc:
            self.socket.close()
            raise VidsegError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror})", fix="choose another --port "
                              "or 0 for a free one") from None
        self.port = self.socket.getsockname()[1]
        self.token = new_token()
        self.state = AppState(root, max_upload, heartbeat)
        config = uvicorn.Config(build_app(self.state, self.port, self.token), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        """The address with the token: what a person opens."""
        return f"{self.address}?token={self.token}"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.state.close()

    def start(self) -> AppServer:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.02)
        return self

    def close(self) -> None:
        self.state.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.socket.close()
