"""Atomic file writes: a later stage or kernel never reads half a file.

Every output another stage reads (meta.csv, fold tables, oof.csv / test.csv, submission.csv, the
ensemble fit) is written to a temporary file beside its target and renamed over it only once
it is complete (``os.replace`` is atomic within a file system). A write that fails (a full
disk, a killed session) leaves the previous file as it was and no temporary file behind, and
raises :class:`WriteError`: a UserError naming the file and the cause, so the CLI prints one
line (exit 2) instead of a traceback.
"""
from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

# Causes a user can fix (space, quota, permissions, a read-only mount): worded, not traced back.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class WriteError(UserError, OSError):
    """An output file could not be written; the previous file (if any) is left intact."""


def describe_os_error(exc: OSError) -> str:
    """'no space left on device' rather than '[Errno 28] No space left on device: '/x/.y.tmp''."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    return why[:1].lower() + why[1:]


def temp_name(path: Path) -> Path:
    """The hidden temporary name beside ``path`` (per process: two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True, **open_kw: Any) -> Iterator:
    """``with atomic_write(p) as f: f.write(...)``: the file appears at ``p`` complete or not at all.

    The data is flushed and (``fsync``) synced before the rename, so a full disk surfaces here
    and not later as a short file; thousands of small files a journal verifies anyway (the
    preprocess PNGs) skip the sync, which costs milliseconds each. On any failure the temporary
    file is removed and the target keeps its previous content; an OSError becomes
    :class:`WriteError` naming ``path``."""
    path = Path(path)
    tmp = temp_name(path)
    if "b" not in mode:
        open_kw.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **open_kw) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            kept = "the previous file is kept" if path.exists() else "nothing was written there"
            raise WriteError(f"{path}: cannot write ({describe_os_error(exc)}); {kept}") from exc
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dump_kw: Any) -> Path:
    return write_text(path, json.dumps(obj, **dump_kw))


def write_csv(frame, path: str | os.PathLike, **to_csv_kw: Any) -> Path:
    """``frame.to_csv(path, index=False, ...)``, atomically."""
    to_csv_kw.setdefault("index", False)
    with atomic_write(path, newline="") as f:
        frame.to_csv(f, **to_csv_kw)
    return Path(path)


def check_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """A UserError now, before any work, when ``folder`` cannot be created or written to
    (a read-only mount, ``chattr +i``, no permission): probed by creating and removing a file."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot write there ({describe_os_error(exc)}); "
                        f"pass a folder you can write to") from None


class FolderBusyError(UserError):
    """Another live process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = ".lock", what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created) for the duration of the block.

    Two runs writing one output folder at once interleave their files (one run's meta.csv over
    the other's images); the second one is refused here with a FolderBusyError naming the folder
    and the holder's pid. The lock is ``fcntl.flock`` on ``folder/name``, so a killed holder
    releases it with its last file descriptor: no stale lock to clean up by hand. The file is
    left in place (removing a locked file would let a third run lock a fresh inode)."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise FolderBusyError(f"{folder}: another {what} is writing here (pid {holder}, lock {path}); wait for "
                                  f"it to finish, or pass another output folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield path
    finally:
        f.close()  # releases the flock
