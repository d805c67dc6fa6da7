"""Reading ahead and writing behind on threads, so decoding and encoding overlap the network's work.

Both keep bounded queues (memory does not grow with the video) and hand every error to the caller's thread:
:func:`read_ahead` raises a reader's error where the failed item would have come; :class:`WriteBehind` raises a
writer's error at the next :meth:`WriteBehind.put` or at :meth:`WriteBehind.close`. The image codecs (OpenCV,
PIL's zlib) release the GIL, so on two cores the threads run beside the network.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Item = TypeVar("Item")
_DONE = object()


def read_ahead(items: Iterable[Item], depth: int = 2) -> Iterator[Item]:
    """``items`` produced on a thread, at most ``depth`` ahead of the consumer. Leaving the loop early (or an error in
    the consumer) stops the thread at its next item."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer, raised there
            buffer.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="vidseg-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class WriteBehind:
    """Runs ``write(*job)`` for each :meth:`put` job on one thread, in order, at most ``depth`` jobs behind.

    ``done`` is called (on the writer thread) with each job's ``token`` once its write returned, so the caller
    learns what is safely on disk. After an error no further job is written.
    """

    def __init__(self, write: Callable[..., None], done: Callable[[Any], None], depth: int = 4):
        self._write, self._done = write, done
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None  # the first error, until raised in the caller's thread
        self._failed = False  # stays set: once a write failed, no later job is written (no hole before a mask)
        self._thread = threading.Thread(target=self._run, name="vidseg-write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            entry = self._jobs.get()
            if entry is _DONE:
                return
            if not self._failed:
                token, job = entry
                try:
                    self._write(*job)
                    self._done(token)
                except BaseException as exc:  # noqa: BLE001 -- raised in the caller's thread
                    self._error, self._failed = exc, True

    def put(self, token: Any, *job: Any) -> None:
        self._raise_error()
        self._jobs.put((token, job))

    def drain(self) -> None:
        """Wait until every job put is written (or failed) and stop the thread; keep any error for :meth:`close`."""
        if self._thread.is_alive():
            self._jobs.put(_DONE)
            self._thread.join()

    def close(self) -> None:
        """:meth:`drain`, then raise the first error."""
        self.drain()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


__all__ = ["WriteBehind", "read_ahead"]
