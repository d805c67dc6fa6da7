"""``vidseg app``: a local web page to paint, propagate, correct and export masks of a video.

The page drives the same :class:`~vidseg.inference.session.InferenceSession` and mask writers as
``vidseg segment``: :mod:`vidseg.app.workspace` keeps one work folder per video (given masks, results, session
snapshots), :mod:`vidseg.app.jobs` runs the long work on threads, :mod:`vidseg.app.server` serves the page and
its API on 127.0.0.1 behind a token (:mod:`vidseg.app.security`). The web stack (Starlette, uvicorn) is the
optional ``app`` extra; only :mod:`vidseg.app.server` and :mod:`vidseg.app.security` import it.
"""
