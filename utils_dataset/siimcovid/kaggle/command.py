"""The ``kaggle`` command, driven as a subprocess, with its output READ.

``kaggle kernels push`` prints a server-side refusal ("Kernel push error: ...", sources "not
valid" and dropped) and still exits 0, and every command without credentials prints a login
banner and exits 1. So: the executable is found on PATH (a fake can stand in), credentials are
checked ONCE up front with one clear message, every call's output is scanned for refusals, and
secrets are scrubbed from anything that is returned or raised. ``import kaggle`` is never used
(2.2.5 authenticates at import time and prints the banner).

Credential sources, in the order the client (2.2.5 and kagglesdk) tries them: an access token
(KAGGLE_API_TOKEN: the token or a file holding it; ~/.kaggle/access_token[.txt]), then
KAGGLE_USERNAME + KAGGLE_KEY, then kaggle.json in KAGGLE_CONFIG_DIR, ~/.kaggle or
$XDG_CONFIG_HOME/kaggle.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..errors import UserError

CREDENTIALS_HELP = ("put your API token in ~/.kaggle/kaggle.json (kaggle.com > Settings > API > Create New "
                    "Token; chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN")
# Lines the client prints for a refusal while exiting 0 (kaggle 2.2.5 kernels_push_cli / datasets_*_cli).
REFUSALS = (
    re.compile(r"^Kernel push error: ?(.*)$", re.M),
    re.compile(r"^(The following are not valid \w+ sources and could not be added to the kernel: .*)$", re.M),
    re.compile(r"^Dataset (?:version )?creation error: ?(.*)$", re.M),
    re.compile(r"^(You must authenticate before you can call the Kaggle API\.?)$", re.M),
)


class KaggleError(RuntimeError):
    """A kaggle command failed or the server refused the request; the message is the client's."""


class CredentialsError(UserError):
    """No usable Kaggle credentials (one line, printed once, never the secret itself)."""


@dataclass(frozen=True)
class Credentials:
    source: str  # where they were found (a path or variable names), safe to print
    user: str | None  # the user name when the source names it (tokens do not)
    secrets: tuple[str, ...]  # values to scrub from output; never printed


def _config_dir(env: Mapping[str, str], home: Path) -> Path:
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _read_token_file(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def find_credentials(env: Mapping[str, str] | None = None, home: str | os.PathLike | None = None) -> Credentials | None:
    """The credentials the kaggle client would use, or None. Reads no network."""
    env = os.environ if env is None else env
    home = Path(home) if home is not None else Path(os.path.expanduser("~"))
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        from_file = _read_token_file(Path(token)) if len(token) < 4096 and Path(token).is_file() else None
        return Credentials("KAGGLE_API_TOKEN", env.get("KAGGLE_USERNAME"), (from_file or token,))
    for name in ("access_token", "access_token.txt"):
        token = _read_token_file(home / ".kaggle" / name)
        if token:
            return Credentials(f"~/.kaggle/{name}", env.get("KAGGLE_USERNAME"), (token,))
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", env["KAGGLE_USERNAME"], (env["KAGGLE_KEY"],))
    cfg = _config_dir(env, home) / "kaggle.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CredentialsError(f"{cfg} is not readable JSON ({type(exc).__name__}): {CREDENTIALS_HELP}") from None
        if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
            raise CredentialsError(f"{cfg} lacks 'username' or 'key': {CREDENTIALS_HELP}")
        return Credentials(str(cfg), str(data["username"]), (str(data["key"]),))
    return None


def check_credentials(env: Mapping[str, str] | None = None, home: str | os.PathLike | None = None) -> Credentials:
    """:func:`find_credentials` or ONE clear :class:`CredentialsError` (instead of the client's
    login banner once per call)."""
    creds = find_credentials(env, home)
    if creds is None:
        raise CredentialsError(f"no Kaggle credentials found: {CREDENTIALS_HELP}")
    return creds


def find_executable(env: Mapping[str, str] | None = None) -> str:
    """The ``kaggle`` command on PATH, else the one beside this Python (a venv not activated)."""
    env = os.environ if env is None else env
    exe = shutil.which("kaggle", path=env.get("PATH"))
    if exe:
        return exe
    beside = Path(sys.executable).with_name("kaggle")
    if beside.is_file():
        return str(beside)
    raise UserError("the `kaggle` command is not on PATH: pip install kaggle (requirements.txt pins it)")


def refusal(output: str) -> str | None:
    """The refusal message in a kaggle command's output, or None."""
    for pat in REFUSALS:
        m = pat.search(output)
        if m:
            return m.group(1).strip() or m.group(0).strip()
    return None


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout + stderr, secrets scrubbed


class Kaggle:
    """One authenticated ``kaggle`` command. Construct it once: credentials are checked here
    (``CredentialsError``) and never again per call.

    Every call runs the command, scrubs secrets from its output and raises :class:`KaggleError`
    (message = the client's own lines) on a non-zero exit OR a refusal printed with exit 0;
    reading what a command printed is :mod:`siimcovid.kaggle.client`'s. ``runner`` is
    ``subprocess.run``-compatible (tests may pass a fake)."""

    def __init__(self, exe: str | None = None, *, env: Mapping[str, str] | None = None,
                 home: str | os.PathLike | None = None, check: bool = True,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run, timeout: float = 600):
        self.env = dict(os.environ if env is None else env)
        self.credentials = check_credentials(self.env, home) if check else find_credentials(self.env, home)
        self.exe = exe or find_executable(self.env)
        self.runner = runner
        self.timeout = timeout

    @property
    def user(self) -> str | None:
        return self.credentials.user if self.credentials else None

    def scrub(self, text: str) -> str:
        for secret in (self.credentials.secrets if self.credentials else ()):
            if secret:
                text = text.replace(secret, "***")
        return text

    def run(self, *args: str, check: bool = True) -> Result:
        try:
            proc = self.runner([self.exe, *args], capture_output=True, text=True, env=self.env, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise KaggleError(f"kaggle {' '.join(args[:2])}: no answer after {exc.timeout:.0f} s") from None
        out = self.scrub(((proc.stdout or "") + (proc.stderr or "")).strip())
        res = Result(tuple(args), proc.returncode, out)
        if check:
            why = refusal(out)
            if proc.returncode or why:
                tail = "\n".join(out.splitlines()[-5:]) or "(no output)"
                raise KaggleError(f"kaggle {' '.join(args[:2])} failed (exit {proc.returncode}): {why or tail}")
        return res

    # -- datasets (always -r zip: the default `skip` drops sub-folders, i.e. the package)
    def dataset_create(self, folder: str | os.PathLike) -> Result:
        return self.run("datasets", "create", "-p", str(folder), "-r", "zip")

    def dataset_version(self, folder: str | os.PathLike, message: str) -> Result:
        return self.run("datasets", "version", "-p", str(folder), "-m", message, "-r", "zip")
