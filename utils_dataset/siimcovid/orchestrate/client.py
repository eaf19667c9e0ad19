"""The ``kaggle`` command, driven as a program (so a fake on PATH can stand in), and its output read.

Every call goes through :meth:`Client.run`: one place to switch to the project's wrapper in
``siimcovid.kaggle`` once it exists. Credentials stay in the client's own configuration; whatever
the command prints passes through :func:`redact` before anyone sees it.

Output formats (kaggle 2.2.5, ``kaggle/api/kaggle_api_extended.py``):
- push: ``Kernel version 3 successfully pushed.  Please check progress at URL``; a server refusal is
  printed (``Kernel push error: ...``, ``The following are not valid ... sources ...``) with exit 0;
- status: ``owner/slug has status "KernelWorkerStatus.RUNNING"`` (+ ``Failure message: "..."``);
  ``owner/slug/N`` asks for version N (the client sends ``version_label=vN``);
- output: the files plus ``<slug>.log`` (a JSON list of ``{"stream_name", "time", "data"}``) in ``-p DIR``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import UserError

ACTIVE = ("QUEUED", "RUNNING", "NEW_SCRIPT")
FAILED = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
TERMINAL = ("COMPLETE",) + FAILED
# Refusals the client prints with exit status 0.
_PUSH_REFUSALS = (re.compile(r"kernel push error", re.I),
                  re.compile(r"not valid (dataset|competition|kernel|model) sources", re.I))
_DATASET_REFUSALS = (re.compile(r"dataset (version )?creation error", re.I),
                     re.compile(r"not valid tags", re.I))


class KaggleError(RuntimeError):
    """The kaggle command failed or the server refused a request (message already redacted)."""


def _config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")


def _secrets() -> list[str]:
    """Values that must never be shown: the API key / token from the environment or the client's
    configuration (read only to mask them)."""
    out = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    cfg = _config_dir()
    try:
        out.append(str(json.loads((cfg / "kaggle.json").read_text()).get("key", "")))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        out.append((cfg / "access_token").read_text().strip())
    except OSError:
        pass
    return [s for s in out if len(s) >= 6]


def redact(text: str, secrets: list[str] | None = None) -> str:
    for s in _secrets() if secrets is None else secrets:
        text = text.replace(s, "***")
    return text


def credentials_present() -> bool:
    """Whether the kaggle client will find credentials (it never sees them through us)."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    cfg = _config_dir()
    return (cfg / "kaggle.json").is_file() or (cfg / "access_token").is_file()


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
    for pat in _PUSH_REFUSALS:
        if pat.search(text):
            raise KaggleError(f"push refused: {text.strip()[-500:]}")
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
    """The ``kaggle`` executable found on PATH (``exe`` to name another)."""

    def __init__(self, exe: str | None = None, timeout_s: float = 900):
        found = exe or shutil.which("kaggle")
        if not found:
            raise UserError("no `kaggle` command on PATH: `pip install kaggle` (or activate .venv)")
        self.exe = found
        self.timeout_s = timeout_s

    def run(self, *args: str, check: bool = True) -> str:
        """Run ``kaggle ARGS``; returns stdout + stderr (redacted). Raises KaggleError on a non-zero
        exit (when ``check``); refusals printed with exit 0 are read by the callers."""
        try:
            res = subprocess.run([self.exe, *args], capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise KaggleError(f"kaggle {' '.join(args[:2])}: no answer in {self.timeout_s:.0f} s") from exc
        out = redact((res.stdout or "") + (res.stderr or ""))
        if check and res.returncode != 0:
            raise KaggleError(f"kaggle {' '.join(args[:2])} exited {res.returncode}: {tail(out, 8)}")
        return out

    # kernels
    def push(self, folder: Path, accelerator: str | None = None) -> int:
        args = ["kernels", "push", "-p", str(folder)] + (["--accelerator", accelerator] if accelerator else [])
        return parse_push(self.run(*args))

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

    def log_tail(self, kernel_id: str, version: int | None, n: int = 30) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                log = self.output(kernel_id, version, Path(tmp), files=False)
            except KaggleError as exc:
                return f"(no log: {exc})"
            return redact(tail(log_text(log.read_text(errors="replace")), n)) if log else "(no log)"

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
            out = self.run("datasets", "version", "-p", str(folder), "-m", message, "-r", "zip")
        else:
            out = self.run("datasets", "create", "-p", str(folder), "-r", "zip")
        if any(p.search(out) for p in _DATASET_REFUSALS):
            raise KaggleError(f"dataset upload refused: {tail(out, 8)}")
