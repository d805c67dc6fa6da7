"""Reading ahead and writing behind on threads (vidseg.io.pipeline)."""

import threading
import time

import pytest

from vidseg.io.pipeline import WriteBehind, read_ahead


def test_read_ahead_keeps_the_order_and_stays_bounded():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items(), depth=2):
        time.sleep(0.002)
        assert len(produced) - len(seen) <= 4  # the queue (2), one in hand, one being put
        seen.append(item)
    assert seen == list(range(20))


def test_read_ahead_raises_the_readers_error_where_the_item_would_come():
    def items():
        yield 1
        raise OSError("frame 2 is corrupt")

    got = []
    with pytest.raises(OSError, match="corrupt"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_reader():
    before = threading.active_count()
    for item in read_ahead(iter(range(10**6)), depth=2):
        if item == 3:
            break
    time.sleep(0.3)
    assert threading.active_count() == before


def test_write_behind_writes_in_order_and_reports_what_is_done():
    written, done = [], []
    writer = WriteBehind(lambda value: written.append(value), done.append, depth=2)
    for i in range(10):
        writer.put(f"token{i}", i)
    writer.close()
    assert written == list(range(10)) and done == [f"token{i}" for i in range(10)]


def test_write_behind_raises_the_writers_error_and_writes_nothing_after_it():
    written = []

    def write(value):
        if value == 3:
            raise OSError("disk full")
        written.append(value)

    writer = WriteBehind(write, lambda token: None, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(10):
            writer.put(i, i)
            time.sleep(0.01)
        writer.close()
    writer.drain()
    assert written == [0, 1, 2]


def test_write_behind_writes_no_queued_job_after_an_error_raised_by_put():
    # Jobs queued behind the failing one stay unwritten, also after put() has raised the error (which it then
    # forgets): a later mask on disk after a missing one would leave a hole that --resume skips.
    written, done, release = [], [], threading.Event()

    def write(value):
        if value == 3:
            release.wait(5)
            raise OSError("disk full")
        written.append(value)

    writer = WriteBehind(write, done.append, depth=4)
    for i in range(6):  # 0-2 written, 3 blocks in the writer, 4 and 5 wait in the queue
        writer.put(i, i)
    release.set()
    time.sleep(0.2)  # the writer fails on 3
    with pytest.raises(OSError, match="disk full"):
        writer.put(6, 6)
    writer.drain()
    assert written == [0, 1, 2] and done == [0, 1, 2]
