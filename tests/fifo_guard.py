"""Run code near a FIFO without letting a regression hang the test run: a reader that opens the
FIFO blocks in open() until a writer comes, so the call runs in a daemon thread; past the limit
the FIFO is opened for writing (which releases the reader) and the test fails, naming it."""
from __future__ import annotations

import os
import threading
from pathlib import Path


def call_without_hanging(fn, fifo: Path, seconds: float = 60.0):
    """``fn()``'s result, or AssertionError when it is still running after ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test thread as is
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer: the blocked open() returns
            os.close(fd)
        except OSError:
            pass
        raise AssertionError(f"still running after {seconds:g} s: something opened the FIFO {fifo}")
    if "error" in box:
        raise box["error"]
    return box.get("result")
