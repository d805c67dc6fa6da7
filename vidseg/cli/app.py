"""``vidseg app``: serve the local web page that paints, propagates, corrects and exports masks.

The web stack is the optional ``app`` extra: this module imports it only when the command runs, so the parser
(which imports every subcommand) works without it.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from vidseg.machine import THREADS_HELP, parse_threads

WORK_FOLDER = "vidseg-app"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="a local web page: paint the first mask, propagate, correct any frame, export",
        description="Serve a web page on 127.0.0.1 (a free port; the address with its access token is printed) "
        "to segment a video without a mask file: paint objects on any frame, propagate with progress, correct "
        "a frame and propagate again, export the masks, the overlay video and the painted masks. Needs the "
        "`app` extra: pip install -e \".[app]\". Nothing is fetched from the internet.",
        epilog="examples:\n"
        "  vidseg app my_video.mp4\n"
        "  vidseg app frames/ --work /tmp/vidseg-app --no-browser --threads 1\n"
        "  vidseg app                                  # open or upload a video on the page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", nargs="?", help="video file (.mp4/.avi/.mov/...) or folder of .jpg/.png frames "
                        "to open at start (others can be opened or uploaded on the page)")
    parser.add_argument("--work", metavar="DIR", help="where each video's work folder goes (painted masks, "
                        f"results, session snapshots, exports; one subfolder per video). Default: {WORK_FOLDER}/ "
                        "beside VIDEO, or in the current folder without VIDEO. Uploads go to DIR/uploads/")
    parser.add_argument("--port", type=int, default=0, metavar="N", help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    parser.add_argument("--max-upload", type=int, default=2048, metavar="MB",
                        help="largest video the page may upload, in MB (default: 2048; open larger ones by path)")
    parser.add_argument("--threads", type=parse_threads, default="auto", metavar="N", help=THREADS_HELP)
    parser.set_defaults(func=run)


def _missing_web_stack() -> str | None:
    for module in ("starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def run(args: argparse.Namespace) -> int:
    import sys
    import webbrowser

    from vidseg.errors import VidsegError
    from vidseg.machine import set_threads

    missing = _missing_web_stack()
    if missing is not None:
        raise VidsegError(f"vidseg app needs the web extra ({missing} is not installed)",
                          fix='install it with: pip install -e ".[app]"  (or pip install "vidseg[app]")')
    from vidseg.app.server import AppServer

    if args.max_upload <= 0:
        raise VidsegError("--max-upload must be a positive number of MB")
    root = Path(args.work) if args.work else (Path(args.video).expanduser().resolve().parent / WORK_FOLDER
                                              if args.video else Path.cwd() / WORK_FOLDER)
    threads = set_threads(args.threads)
    server = AppServer(root, port=args.port, max_upload=args.max_upload << 20)
    if args.video:
        try:
            server.state.initial = server.state.open(args.video).id
        except VidsegError:
            server.socket.close()
            raise
    if threads:
        print(threads, file=sys.stderr)
    print(f"vidseg app: work folders in {server.state.root}", file=sys.stderr)
    print(f"vidseg app: open {server.url}  (Ctrl-C stops the server)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    server.run()
    return 0
