"""``python -m siimcovid run-local``: the kernel graph's notebooks run here with papermill, in graph
order, each one seeing a Kaggle-shaped input folder.

Per kernel, under ``OUT/<slug>/``::

    input/competitions/<slug>              -> --data (the competition folder), or for another
                                              competition (RSNA, VinBigData) --inputs/competitions/<slug>
    input/datasets/<owner>/<slug>          -> --inputs/datasets/<owner>/<slug> (external sets' stand-ins)
    input/datasets/<user>/siimcovid-utils  -> utils_dataset/ of this checkout
    input/notebooks/<user>/<upstream slug> -> OUT/<upstream slug>/work
    work/                                  what the notebook writes (its cwd is OUT/<slug>, and the
                                           notebooks' local default output folders live under work/)
    <code_file>                            the executed notebook
    done.json                              the done-marker: skipped on the next run while it and its
                                           inputs' markers are unchanged

The notebook finds its inputs through ``SIIM_INPUT`` (= ``input/``), searched the way
/kaggle/input is, so it cannot tell this run from Kaggle except by what it finds. Inputs that only
Kaggle has (other datasets, Kaggle Models) are left out and named in the progress line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .. import variants
from ..errors import UserError, reraise_interrupts
from .render import fill_placeholders
from . import graph as G

DONE = "done.json"
WORK = "work"
PROFILE_STAGE = "local"  # the profiles are variants in configs/local/
UTILS_SLUG = "siimcovid-utils"

Executor = Callable[[Path, Path, dict, Path, dict], None]


@dataclass
class Profile:
    """A run-local profile (configs/local/<name>.yaml).

    params: stage (template name) -> notebook parameters on top of the template's own
    repeat: stage -> repeat values replacing the template's (fewer kernels)
    """
    name: str = "tiny"  # variants.load sets the file's stem
    params: Optional[dict] = None  # None (or null in the file): nothing on top of the templates
    repeat: Optional[dict] = None


def load_profile(name: str) -> dict[str, Any]:
    """``tiny`` / ``full`` / ``demo`` (configs/local/<name>.yaml) or a path to such a YAML file."""
    profile = variants.load(PROFILE_STAGE, name, None, Profile)
    return {"repeat": profile.repeat or {}, "params": profile.params or {}, "name": profile.name}


def papermill_executor(notebook: Path, output: Path, parameters: dict, cwd: Path, env: dict) -> None:
    """Run one notebook; the kernel process inherits ``env`` (set only for the call)."""
    import logging

    import papermill as pm

    # papermill warns about every commented line of a parameters cell; the notebook's own errors still raise
    logging.getLogger("papermill").setLevel(logging.ERROR)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd),
                            progress_bar=False, kernel_name="python3")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=True)


def stand_in(inputs: Path | None, rel: str) -> Path | None:
    """``inputs/rel`` when that stand-in folder exists (``rel``: where Kaggle mounts the source)."""
    return inputs / rel if inputs is not None and (inputs / rel).is_dir() else None


def mount_inputs(node: G.Node, graph: G.Graph, out: Path, data: Path,
                 inputs: Path | None = None) -> tuple[Path, list[str]]:
    """Build ``OUT/<slug>/input`` (the nested /kaggle/input layout, by symlinks); returns it and the
    sources that have no local stand-in."""
    from ..paths import COMPETITION
    from .render import repo_root

    inp = out / node.slug / "input"
    if inp.is_symlink() or inp.is_file():
        inp.unlink()
    shutil.rmtree(inp, ignore_errors=True)
    inp.mkdir(parents=True)
    m, missing = node.kernel.metadata, []
    for comp in m.get("competition_sources") or []:
        src = data if comp == COMPETITION else stand_in(inputs, f"competitions/{comp}")
        (_link(inp / "competitions" / comp, src) if src else missing.append(comp))
    for ds in m.get("dataset_sources") or []:
        owner, slug = ds.split("/")[:2]
        src = repo_root() / "utils_dataset" if slug == UTILS_SLUG else stand_in(inputs, f"datasets/{owner}/{slug}")
        (_link(inp / "datasets" / owner / slug, src) if src else missing.append(ds))
    for u in node.upstream:
        _link(inp / "notebooks" / graph.user / u, out / u / WORK)
    missing += list(m.get("model_sources") or [])
    return inp, missing


def _marker(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def subprocess_executor(notebook: Path, output: Path, parameters: dict, cwd: Path, env: dict) -> None:
    """Run one notebook with papermill in its own process (so several can run at once, each with its
    own environment); its console output goes to ``<output>.log``, its error to the exception."""
    import subprocess
    import sys

    import yaml

    log = output.with_suffix(".log")
    # papermill reads -y with PyYAML (YAML 1.1), which takes JSON's 1e-05 for a string: its own dump reads back
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(output), "-y", yaml.safe_dump(parameters),
           "--cwd", str(cwd), "-k", "python3", "--no-progress-bar"]
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        raise RuntimeError(f"papermill exit {rc} (full log: {log})\n" + "\n".join(tail))


def run(graph: G.Graph, data: Path, out: Path, profile: dict, only: list[str] | None = None,
        executor: Executor | None = None, echo: Callable[[str], None] = print, jobs: int = 1,
        stand_ins: Path | None = None) -> int:
    """Every selected kernel, each once all it reads has run; ``jobs`` at a time (each then limited to
    its share of the cores through the thread variables, and run in its own process). 0 when all are
    done, 1 when one failed (nothing new starts, the running ones finish)."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .render import repo_root

    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be 1 or more")
    unknown = set(profile["params"]) - set(graph.stages()) - set(graph.left_out)  # an optional stage's are kept
    if unknown:
        raise UserError(f"profile {profile['name']!r} sets params of unknown stage(s) {sorted(unknown)}; "
                        f"stages: {graph.stages()}")
    selected = graph.select(only)
    wanted = {n.slug for n in selected}
    for n in selected:
        for u in n.upstream:
            if u not in wanted and not (out / u / DONE).exists():
                raise UserError(f"{n.slug} reads {u}, which has not run here: run it first (or drop --only)")
    if not data.is_dir():
        raise UserError(f"--data {data}: no such folder (the competition folder, e.g. from `siimcovid synth`)")
    if executor is None:
        executor = papermill_executor if jobs == 1 else subprocess_executor
    pythonpath = os.pathsep.join(filter(None, [str(repo_root() / "utils_dataset"), os.environ.get("PYTHONPATH")]))
    limits = {}
    if jobs > 1:  # N processes that each use every core only fight over them
        per_job = str(max(1, (os.cpu_count() or 1) // jobs))
        limits = {k: per_job for k in THREAD_VARS}
    index = {n.slug: i for i, n in enumerate(selected, 1)}
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            echo(text)

    def start(n: G.Node):
        """-> None when done earlier, else (the call's arguments, bookkeeping for its marker)."""
        kdir = out / n.slug
        tag = f"[{index[n.slug]}/{len(selected)}] {n.slug}"
        subs = {"kernel_dir": str(kdir.resolve()), "work": str((kdir / WORK).resolve())}
        params = {**n.kernel.params, **fill_placeholders(profile["params"].get(n.stage, {}), subs)}
        inputs = {u: _marker(out / u / DONE).get("run_id") for u in n.upstream}
        done = _marker(kdir / DONE)
        if done and done.get("inputs") == inputs and done.get("params") == params:
            say(f"{tag}: done earlier ({done.get('seconds', 0):.0f} s), skipped")
            return None
        (kdir / DONE).unlink(missing_ok=True)
        (kdir / WORK).mkdir(parents=True, exist_ok=True)
        inp, missing = mount_inputs(n, graph, out, data, stand_ins)
        say(f"{tag}: running {n.kernel.notebook.name}" + (f" (not available here: {', '.join(missing)})"
                                                          if missing else ""))
        env = {"SIIM_INPUT": str(inp.resolve()), "PYTHONPATH": pythonpath, **limits}
        return (n.kernel.notebook, kdir / n.kernel.metadata["code_file"], params, kdir.resolve(), env), \
            dict(tag=tag, kdir=kdir, inputs=inputs, params=params, stage=n.stage, start=time.time(),
                 notebook=kdir / n.kernel.metadata["code_file"], slug=n.slug)

    def finish(info: dict) -> None:
        seconds = time.time() - info["start"]
        (info["kdir"] / DONE).write_text(json.dumps({"run_id": uuid.uuid4().hex, "inputs": info["inputs"],
                                                     "params": info["params"], "seconds": round(seconds, 1),
                                                     "stage": info["stage"]}, indent=1) + "\n")
        say(f"{info['tag']}: done in {seconds:.0f} s")

    pending, finished, failed, running = list(selected), set(), False, {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for n in list(pending):
                if failed or len(running) >= jobs:
                    break
                if any(u in wanted and u not in finished for u in n.upstream):
                    continue  # still waiting for what it reads
                pending.remove(n)
                job = start(n)
                if job is None:
                    finished.add(n.slug)
                    continue
                args, info = job
                running[pool.submit(executor, *args)] = info
            if failed and not running:
                break
            if not running:
                if pending:  # unreachable with a valid graph: every upstream is selected or done
                    raise UserError(f"run-local: {[n.slug for n in pending]} wait for kernels that never run")
                break
            done_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done_now:
                info = running.pop(fut)
                try:
                    fut.result()
                except BaseException as exc:  # noqa: BLE001 - a failed notebook stops the run, with its message
                    reraise_interrupts(exc)
                    lines = str(exc).strip().splitlines()
                    say(f"{info['tag']}: FAILED after {time.time() - info['start']:.0f} s: "
                        + "\n    ".join(lines[-12:]))
                    say(f"stopped: see {info['notebook']}; re-run to resume from {info['slug']}")
                    failed = True
                    continue
                finish(info)
                finished.add(info["slug"])
    return 1 if failed else 0


def cli(argv: list[str], executor: Executor | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m siimcovid run-local",
                                 description="Run the kernel graph's notebooks here with papermill, in graph "
                                             "order, each with a Kaggle-shaped input folder.")
    ap.add_argument("--data", required=True, help="the competition folder (e.g. from `siimcovid synth`)")
    ap.add_argument("--out", required=True, help="one folder per kernel: input/, work/, the executed notebook")
    ap.add_argument("--profile", default="tiny", help="tiny | full | a profile .yaml (configs/local/)")
    ap.add_argument("--only", nargs="+", default=None, help="stages, slugs or slug prefixes")
    ap.add_argument("--param", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="a notebook parameter on top of the profile's, VALUE as JSON (else a string), "
                         "e.g. preprocess.sizes=[256]")
    ap.add_argument("--jobs", type=int, default=1,
                    help="kernels run at once (independent ones, e.g. folds); each gets cores/jobs threads")
    ap.add_argument("--include", nargs="+", default=[], metavar="STAGE",
                    help="optional stages to add (preprocess-external, pretrain-det, pretrain-cls)")
    ap.add_argument("--inputs", default=None, help="stand-ins for the other inputs, laid out as /kaggle/input "
                    "(competitions/<slug>, datasets/<owner>/<slug>; `siimcovid synth-external` writes one)")
    ap.add_argument("--user", default="local", help="the owner name in the input layout")
    ap.add_argument("--max-fan-in", type=int, default=G.MAX_FAN_IN)
    ap.add_argument("--templates", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--graph", action="store_true", help="print the graph and stop")
    a = ap.parse_args(argv)
    profile = load_profile(a.profile)
    for item in a.param:
        key, eq, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not (eq and dot and stage and name):
            raise UserError(f"--param {item!r}: use STAGE.KEY=VALUE, e.g. preprocess.sizes=[256]")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        profile["params"].setdefault(stage, {})[name] = value
    graph = G.build(a.user, meta_dir=a.templates, max_fan_in=a.max_fan_in, repeat=profile["repeat"],
                    include=a.include)
    print(G.text(graph))
    if a.graph:
        return 0
    if a.inputs and not Path(a.inputs).is_dir():
        raise UserError(f"--inputs {a.inputs}: no such folder")
    return run(graph, Path(a.data), Path(a.out), profile, a.only, executor, jobs=a.jobs,
               stand_ins=Path(a.inputs).resolve() if a.inputs else None)
