"""Reading the ``kaggle`` command's output for the kernel graph, over the project's one wrapper
(:mod:`siimcovid.kaggle.command`: the executable found on PATH so a fake can stand in, credentials
checked once, refusals printed with exit 0 raised, secrets scrubbed).

Output formats (kaggle 2.2.5, ``kaggle/api/kaggle_api_extended.py``):
- push: ``Kernel version 3 successfully pushed.  Please check progress at URL``;
- status: ``owner/slug has status "KernelWorkerStatus.RUNNING"`` (+ ``Failure message: "..."``);
  ``owner/slug/N`` asks for version N (the client sends ``version_label=vN``);
- output: the files plus ``<slug>.log`` (a JSON list of ``{"stream_name", "time", "data"}``) in ``-p DIR``;
- datasets status: ``ready`` (a DatabundleVersionStatus name in lower case), a 404 when there is none.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from .command import Kaggle, KaggleError, refusal

ACTIVE = ("QUEUED", "RUNNING", "NEW_SCRIPT")
FAILED = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
TERMINAL = ("COMPLETE",) + FAILED

# The sources a kernel's metadata lists; the server drops one it cannot resolve (a wrong handle, a
# dataset not shared) and the client prints the refusal of only the first three (never a model's).
SOURCE_KEYS = ("dataset_sources", "competition_sources", "kernel_sources", "model_sources")

__all__ = ["ACTIVE", "FAILED", "TERMINAL", "SOURCE_KEYS", "Client", "KaggleError", "dropped_sources", "parse_push",
           "parse_status", "log_text", "tail"]


def dropped_sources(pushed: dict, stored: dict) -> list[str]:
    """``key handle`` of every source ``pushed`` lists that the server's ``stored`` metadata lacks
    (compared without case: the server may store a handle in its own spelling)."""
    out = []
    for key in SOURCE_KEYS:
        kept = {str(x).strip().lower() for x in stored.get(key) or []}
        out += [f"{key} {src}" for src in pushed.get(key) or [] if str(src).strip().lower() not in kept]
    return out


def parse_status(text: str) -> tuple[str, str]:
    """(STATUS, failure message) from ``kernels status`` output."""
    m = re.search(r'has status "([^"]+)"', text)
    if not m:
        raise KaggleError(f"cannot read a status in: {text.strip()[-300:]!r}")
    status = m.group(1).rsplit(".", 1)[-1].upper()
    msg = re.search(r'Failure message: "(.*)"', text, re.S)
    return status, (msg.group(1).strip() if msg else "")


def parse_push(text: str) -> int:
    """The version number ``kernels push`` created; a refusal (printed with exit 0) raises."""
    why = refusal(text)
    if why:
        raise KaggleError(f"push refused: {why}")
    m = re.search(r"Kernel version (\d+) successfully", text)
    if not m:
        raise KaggleError(f"push printed no version: {text.strip()[-500:]}")
    return int(m.group(1))


def log_text(raw: str) -> str:
    """A kernel log as plain text (Kaggle stores it as a JSON list of stream events)."""
    try:
        events = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(events, list):
        return raw
    return "".join(str(e.get("data", "")) for e in events if isinstance(e, dict))


def tail(text: str, n: int = 30) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


class Client:
    """The kernel graph's calls, each one ``kaggle`` command run through :class:`Kaggle` (whose
    constructor checks the credentials: a :class:`~siimcovid.kaggle.command.CredentialsError`,
    one line, before anything is pushed)."""

    def __init__(self, exe: str | None = None, timeout_s: float = 900):
        self.kaggle = Kaggle(exe, timeout=timeout_s)

    def run(self, *args: str) -> str:
        """``kaggle ARGS`` -> its output (secrets scrubbed); KaggleError on a failure or refusal."""
        return self.kaggle.run(*args).output

    # kernels
    def push(self, folder: Path) -> int:
        """The version pushed. The accelerator is the rendered metadata's (machine_shape)."""
        return parse_push(self.run("kernels", "push", "-p", str(folder)))

    def status(self, kernel_id: str, version: int | None = None) -> tuple[str, str]:
        ref = f"{kernel_id}/{version}" if version else kernel_id
        return parse_status(self.run("kernels", "status", ref))

    def output(self, kernel_id: str, version: int | None, dest: Path, files: bool = True) -> Path | None:
        """Download a version's output files (``files``) and log into ``dest``; returns the log path."""
        ref = f"{kernel_id}/{version}" if version else kernel_id
        args = ["kernels", "output", ref, "-p", str(dest), "-o"]
        if not files:
            args += ["--file-pattern", "^$"]  # matches no file name: only the log is written
        self.run(*args)
        log = dest / f"{kernel_id.split('/')[1]}.log"
        return log if log.exists() else None

    def stored_metadata(self, kernel_id: str) -> dict:
        """The kernel-metadata.json the server stored for the kernel's latest version
        (``kernels pull -m`` into a temporary folder)."""
        with tempfile.TemporaryDirectory() as tmp:
            self.run("kernels", "pull", kernel_id, "-p", tmp, "-m")
            path = Path(tmp) / "kernel-metadata.json"
            if not path.is_file():
                raise KaggleError(f"kernels pull -m {kernel_id} wrote no kernel-metadata.json")
            try:
                return json.loads(path.read_text())
            except ValueError as exc:
                raise KaggleError(f"kernels pull -m {kernel_id}: kernel-metadata.json is not JSON ({exc})") from None

    def log_tail(self, kernel_id: str, version: int | None, n: int = 30) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                log = self.output(kernel_id, version, Path(tmp), files=False)
            except KaggleError as exc:
                return f"(no log: {exc})"
            return self.kaggle.scrub(tail(log_text(log.read_text(errors="replace")), n)) if log else "(no log)"

    # datasets
    def dataset_status(self, dataset_id: str) -> str | None:
        """The dataset's status (``ready``...), or None when it does not exist."""
        try:
            out = self.run("datasets", "status", dataset_id)
        except KaggleError as exc:
            if re.search(r"404|not found", str(exc), re.I):
                return None
            raise
        return out.strip().splitlines()[-1].strip().lower() if out.strip() else ""

    def dataset_upload(self, folder: Path, exists: bool, message: str) -> None:
        # -r zip: sub-folders (the package) are uploaded as one zip that Kaggle unpacks; the
        # default `-r skip` would drop them.
        if exists:
            self.kaggle.dataset_version(folder, message)
        else:
            self.kaggle.dataset_create(folder)
