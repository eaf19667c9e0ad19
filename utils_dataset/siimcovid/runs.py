"""A training run's output folder: its file names, the one finder of fold folders, its config.

A fold of a trained stage writes ``W/<exp>/fold<k>/`` (docs/contracts.md, "Training run output")::

    config.json       the RESOLVED config, incl. ``src_size`` (the images/<S>/ it read): write_config
    run.json          stage, config, seed, versions (siimcovid.log.run_header)
    best.weights.h5   the best epoch's weights        last.ckpt* + state.json   resume
    history.csv/.png  one row per epoch               oof.csv / test.csv        predictions
    model.pth         a detector's weights            loss.png                  a detector's curve
    fold_score.json   the fold's scores and the data it saw

Readers (merge, inference, ensembling) find folds with :func:`find_runs` and read a fold's
config with :func:`read_config`; nobody spells these names or walks folders on their own.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import UserError
from .layout import META_CSV

CONFIG_JSON = "config.json"
RUN_JSON = "run.json"
OOF_CSV = "oof.csv"
TEST_CSV = "test.csv"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
BEST_WEIGHTS = "best.weights.h5"
CKPT_PREFIX = "last.ckpt"
STATE_JSON = "state.json"
SCORES_JSON = "fold_score.json"
# A detector fold (detect/) writes its weights and loss curve under these names instead of
# best.weights.h5 / history.png; the rest of its folder is the names above.
MODEL_PTH = "model.pth"
# config.json key: the weights file a run started from (init_from / the weights kernel), null = random init;
# the rehearsal checks it to see that a fold the graph wired to a pre-training really started from it
INIT_WEIGHTS = "init_weights"
LOSS_PNG = "loss.png"
FOLD_RE = re.compile(r"^fold\d+$")
# A folder is a fold when it is named fold<k> and holds one of these (a fold still training has
# only config.json; one copied for inference may hold only its weights).
FOLD_MARKERS = (CONFIG_JSON, BEST_WEIGHTS, OOF_CSV)
# Folders never searched: they hold tens of thousands of entries and never a fold.
_COMPETITION_MARKER = "sample_submission.csv"  # a competition folder (its train/ and test/ DICOM trees)
_PREPROCESS_MARKER = META_CSV  # a preprocess output (its images/ and tfrecords/)


def fold_name(k: int) -> str:
    """``fold<k>``: the folder name of fold ``k`` (the one spelling of it)."""
    return f"fold{int(k)}"


def fold_dir(exp_dir: str | os.PathLike, k: int) -> Path:
    """``<exp_dir>/fold<k>``."""
    return Path(exp_dir) / fold_name(k)


def fold_index(d: str | os.PathLike) -> int | None:
    """The fold number of a folder named ``fold<k>`` (None for any other name)."""
    name = Path(d).name
    return int(name[4:]) if FOLD_RE.match(name) else None


def of_exp(fold_dirs: Iterable[Path], exp: str | None) -> list[Path]:
    """The fold folders of experiment ``exp`` (their parent folder or config ``name``); all for None."""
    if not exp:
        return list(fold_dirs)
    return [d for d in fold_dirs if Path(d).parent.name == exp or _json(Path(d) / CONFIG_JSON).get("name") == exp]


def is_fold_dir(d: Path) -> bool:
    d = Path(d)
    return bool(FOLD_RE.match(d.name)) and any((d / m).is_file() for m in FOLD_MARKERS)


def walk(root: Path, max_depth: int):
    """os.walk below ``root`` (sorted, at most ``max_depth`` levels) that never descends into a
    competition folder (sample_submission.csv beside the DICOM trees) or a preprocess output's
    images/ and tfrecords/."""
    root = Path(root)
    base = len(root.parts)
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        d = Path(dirpath)
        if len(d.parts) - base >= max_depth or _COMPETITION_MARKER in files:
            dirs[:] = []
        elif _PREPROCESS_MARKER in files:
            dirs[:] = sorted(x for x in dirs if x not in ("images", "tfrecords"))
        else:
            dirs[:] = sorted(dirs)
        yield d, dirs, files


def _json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def find_runs(roots: Sequence[str | os.PathLike] | str | os.PathLike | None = None, exp: str | None = None,
              stage: str | None = None, *, max_depth: int = 8, problems: list[str] | None = None) -> list[Path]:
    """Every fold folder (:func:`is_fold_dir`) under ``roots`` (default: SIIM_INPUT and
    /kaggle/input), sorted and without duplicates; a root may itself be a fold folder. Nothing
    below a fold folder is another fold. ``exp`` keeps folds whose parent folder or config
    ``name`` is ``exp``; ``stage`` keeps folds whose run.json (or config) names that stage
    (folds that name none are kept). Problems (a root that does not exist, nothing found) are
    appended to ``problems`` when given."""
    from .paths import search_roots

    if roots is None:
        root_paths = search_roots(None)
    elif isinstance(roots, (str, os.PathLike)):
        root_paths = [Path(roots)]
    else:
        root_paths = [Path(r) for r in roots]
    notes: list[str] = []
    found: list[Path] = []
    for root in root_paths:
        if not root.is_dir():
            notes.append(f"runs: {root} does not exist (skipped)")
            continue
        if is_fold_dir(root):
            found.append(root)
            continue
        for d, dirs, _files in walk(root, max_depth):
            if d != root and is_fold_dir(d):
                found.append(d)
                dirs[:] = []
            elif d.parent == root and FOLD_RE.match(d.name):  # an experiment's fold that never wrote anything
                notes.append(f"runs: {d}: none of {', '.join(FOLD_MARKERS)} (fold unfinished? skipped)")
                dirs[:] = []
    found = of_exp(found, exp)
    if stage:
        def stage_of(d: Path) -> str | None:
            return _json(d / RUN_JSON).get("stage") or _json(d / CONFIG_JSON).get("stage")
        found = [d for d in found if stage_of(d) in (None, stage)]
    unique = sorted({d.resolve(): d for d in found}.values())
    if not unique and not notes:
        notes.append(f"runs: no fold*/ with {' or '.join(FOLD_MARKERS)} under "
                     f"{[str(r) for r in root_paths] or '(no roots)'}" + (f" for experiment {exp!r}" if exp else ""))
    if problems is not None:
        problems.extend(notes)
    return unique


# ---------------------------------------------------------------------------------------
# The resolved config
# ---------------------------------------------------------------------------------------


def _as_dict(cfg: Any) -> dict:
    if hasattr(cfg, "to_dict"):
        return dict(cfg.to_dict())
    from dataclasses import asdict, is_dataclass

    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def write_config(run_dir: str | os.PathLike, cfg: Any, **resolved: Any) -> Path:
    """Write ``run_dir/config.json``: ``cfg`` (a dict, a dataclass or anything with
    ``to_dict()``) with the values chosen at run time laid over it, e.g.
    ``write_config(out, cfg, src_size=src)`` once the source image size is picked, so readers
    never re-derive it. Written atomically (a kernel killed mid-write leaves the old file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = _as_dict(cfg)
    data.update({k: v for k, v in resolved.items() if v is not None})
    from .atomic import write_json

    return write_json(run_dir / CONFIG_JSON, data, indent=2, default=str)


def read_config(run_dir: str | os.PathLike) -> dict:
    """``run_dir/config.json`` as a dict; FileNotFoundError / ValueError naming the file."""
    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (not a fold folder, or the fold never started)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def read_scores(run_dir: str | os.PathLike) -> dict | None:
    """``fold_score.json`` (the fold's scores and ``data``: src_size, rows seen), None if absent."""
    data = _json(Path(run_dir) / SCORES_JSON)
    return data or None


def src_size(run_dir: str | os.PathLike, train_pre: str | os.PathLike | None = None) -> int | None:
    """The images/<S>/ size the fold read, the one chain every reader uses: config.json
    ``src_size`` (written by :func:`write_config`), else fold_score.json ``data.src_size`` (folds
    trained before the config recorded it), else, for a fold copied with only its weights and a
    config that predates both, what training would have picked from ``train_pre`` for the
    config's ``image_size`` (:func:`siimcovid.layout.pick_size`), else that ``image_size`` (a
    classifier) or ``siim.size`` (a detector); None when nothing says."""
    cfg = _json(Path(run_dir) / CONFIG_JSON)
    if cfg.get("src_size"):
        return int(cfg["src_size"])
    scores = read_scores(run_dir) or {}
    try:
        return int(scores["data"]["src_size"])
    except (KeyError, TypeError, ValueError):
        pass
    if cfg.get("image_size"):
        if train_pre is not None:
            from .layout import pick_size

            try:
                return pick_size(train_pre, int(cfg["image_size"]))
            except FileNotFoundError:
                pass
        return int(cfg["image_size"])
    siim = cfg.get("siim") or {}
    return int(siim["size"]) if siim.get("size") else None


def all_present(run_dir: str | os.PathLike, names: Iterable[str] = (OOF_CSV, TEST_CSV, SCORES_JSON)) -> bool:
    """True when a fold finished (its predictions and scores are written)."""
    return all((Path(run_dir) / n).is_file() for n in names)


class FoldReport:
    """What happened to each fold folder a stage predicted with at test time: ``used`` (its image count
    and time) or ``skipped`` (the reason, also logged). ``info`` is the dict the inference kernel records."""

    def __init__(self, kind: str):
        self.kind = kind
        self.info: dict = {"folds": {}, "used": [], "skipped": []}

    def used(self, fold_dir: str | os.PathLike, n_images: int, seconds: float) -> None:
        self.info["folds"][str(fold_dir)] = {"status": "used", "n_images": int(n_images), "seconds": round(seconds, 2)}
        self.info["used"].append(str(fold_dir))

    def skipped(self, fold_dir: str | os.PathLike, exc: BaseException) -> None:
        from .log import get_logger

        get_logger().warning("%s fold skipped: %s: %s: %s", self.kind, fold_dir, type(exc).__name__, exc)
        self.info["folds"][str(fold_dir)] = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
        self.info["skipped"].append(str(fold_dir))


# ---------------------------------------------------------------------------------------
# One writer per fold folder
# ---------------------------------------------------------------------------------------

LOCK_FILE = "train.lock"  # {pid, host, started}: the process training into this fold folder


class FoldBusy(UserError):
    """Another live process is training into this fold folder (the CLI prints it as one line)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _take_lock(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(me))
    return True


@contextmanager
def claim(fold_dir: str | os.PathLike):
    """Hold ``fold_dir/train.lock`` while training into ``fold_dir`` (created if needed): a second
    process that claims the same folder raises :class:`FoldBusy` naming the holder, instead of both
    writing the same checkpoints. A lock left by a dead process of this host is taken over with a
    warning; one from another host cannot be checked and refuses. Released (and the folders this
    call created, if still empty, removed) on exit, also on an error."""
    import socket
    import time

    from .log import get_logger

    d = Path(fold_dir)
    made = [p for p in (d, *d.parents) if not p.exists()]  # removed again if still empty at the end
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _attempt in range(3):
        if _take_lock(path, me):
            break
        holder = _json(path)
        pid, host = holder.get("pid"), holder.get("host")
        if not holder and path.exists():  # being written this instant, or garbage: look again
            time.sleep(0.2)
            holder = _json(path)
            pid, host = holder.get("pid"), holder.get("host")
        if host == me["host"] and isinstance(pid, int) and not _pid_alive(pid):
            get_logger().warning("%s: taking over a stale lock of pid %s (no longer running, started %s)",
                                 path, pid, holder.get("started"))
            path.unlink(missing_ok=True)
            continue
        if not path.exists():  # released meanwhile
            continue
        where = "this host" if host == me["host"] else f"host {host}"
        raise FoldBusy(f"{d}: another process is training into this fold (pid {pid} on {where}, since "
                       f"{holder.get('started', '?')}; lock {path}): wait for it, train another fold or folder, "
                       f"or delete {path} if that run is dead")
    else:
        raise FoldBusy(f"{d}: could not take {path} (another process keeps taking it)")
    try:
        yield path
    finally:
        if _json(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
        for p in made:  # deepest first: a check that failed before training leaves no folder behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
