"""Errors a user can fix, the exit statuses every command shares, and the one interrupt rule.

Exit statuses (every ``python -m siimcovid`` command):
  0  done, nothing failed;
  1  done, but some items failed and were recorded (a DICOM in errors.csv, a fold skipped by a merge,
     a submission with problems);
  2  nothing done: a user error (wrong path, unknown config, bad option), printed as ONE line that
     names the problem and the fix, never a traceback.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the user can fix (a path, a name, an option). The CLI prints it as one line and
    exits 2; raise it BEFORE anything is written, so a failed start leaves nothing behind."""


def reraise_interrupts(exc: BaseException) -> None:
    """Call first in an ``except BaseException`` block that protects a batch from one bad item.

    Decoders written in Rust panic with a BaseException (pyo3's PanicException), so a batch has to
    catch BaseException to survive them, but Ctrl-C and sys.exit must still stop the batch."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
