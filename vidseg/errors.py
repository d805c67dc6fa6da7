"""User-facing errors: one line that names the file and the fix."""

from __future__ import annotations

from os import PathLike


class VidsegError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits non-zero."""

    def __init__(self, message: str, path: str | PathLike | None = None, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.fix = fix
        text = message if self.path is None else f"{self.path}: {message}"
        if fix:
            text = f"{text} ({fix})"
        super().__init__(text)
