"""``python -m siimcovid kaggle plan|push|status|pull``: the kernel graph on Kaggle.

Everything lands in ``--out`` (default ``build/kaggle``): ``kernels/<slug>/`` (rendered kernels),
``siimcovid-utils/`` (the staged utils dataset), ``state.json`` (what was pushed, see state.py)
and, for ``pull``, ``input/`` laid out as the kernels see /kaggle/input.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

from ..errors import UserError
from . import graph as G

DEFAULT_OUT = "build/kaggle"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default=None,
                   help="your Kaggle user name (default: $KAGGLE_USERNAME, then the one in kaggle.json)")
    p.add_argument("--out", default=DEFAULT_OUT, help="rendered kernels, staged dataset and state.json")
    p.add_argument("--max-fan-in", type=int, default=G.MAX_FAN_IN,
                   help="a kernel reading more kernels than this reads collect-<stage> kernels instead")
    p.add_argument("--templates", default=None, help=argparse.SUPPRESS)  # another kernel-metadata/ (tests)


def _choices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default=None,
                   help="accelerator id for the kernels whose template offers it (kernel-metadata `_render."
                        "accelerators`, e.g. NvidiaL4); the other kernels keep theirs")
    p.add_argument("--docker-image", default=None,
                   help="image for the wheels kernel and every kernel installing its output")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m siimcovid kaggle",
                                 description="Plan, push, watch and pull the pipeline's kernel graph on Kaggle.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="render every kernel, validate, print the graph")
    _common(p)
    _choices(p)
    p.add_argument("--budget", default=None,
                   help="JSON {stage: seconds per test image per kernel}: warn when inference may pass 9 h")
    p = sub.add_parser("push", help="upload the utils dataset, push kernels in graph order, wait for each")
    _common(p)
    p.add_argument("--only", nargs="+", default=None, help="stages, slugs or slug prefixes to push")
    p.add_argument("--from", dest="from_stage", default=None,
                   help="re-push this stage and everything that reads it, even if up to date")
    p.add_argument("--dry-run", action="store_true", help="print what would be pushed; no kaggle call")
    p.add_argument("--max-sessions", default=None,
                   help="concurrent sessions, e.g. cpu=5,gpu=2,tpu=1 (the defaults)")
    _choices(p)
    p.add_argument("--poll", type=float, default=20.0, help="first poll interval in seconds (backs off to 300)")
    p = sub.add_parser("status", help="the graph with each kernel's pushed version and state")
    _common(p)
    p.add_argument("--offline", action="store_true", help="only the state file, no kaggle call")
    p = sub.add_parser("pull", help="outputs + logs of completed versions, laid out like /kaggle/input")
    _common(p)
    p.add_argument("--dest", default=None, help="default: OUT/input")
    p.add_argument("--only", nargs="+", default=None, help="stages, slugs or slug prefixes")
    return ap


def _graph(a) -> G.Graph:
    from .render import choose, resolve_user

    user, _ = resolve_user(a.user)
    graph = G.build(user, meta_dir=a.templates, max_fan_in=a.max_fan_in)
    # the user's accelerator / image, each only where the templates allow it (kaggle.choose)
    choose([n.kernel for n in graph.order()], getattr(a, "accelerator", None), getattr(a, "docker_image", None))
    return graph


def _client():
    from .client import Client

    return Client()  # checks the credentials once (one line, exit 2) before anything is pushed


def _fail_on(errors: list[str]) -> None:
    if errors:
        raise UserError(f"{len(errors)} problem(s) Kaggle would refuse: " + "; ".join(errors))


def cli_kaggle(argv: list[str], sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time) -> int:
    a = parser().parse_args(argv)
    g = _graph(a)
    out = Path(a.out)
    errors, warnings = G.check(g)
    if a.cmd == "plan":
        budget = json.loads(Path(a.budget).read_text()) if a.budget else None
        _fail_on(errors)
        G.render(g, out / "kernels")
        errors, warnings = G.check(g, out / "kernels")
        _fail_on(errors)
        print(G.text(g))
        for w in warnings + G.budget_warnings(g, budget):
            print(f"warning: {w}")
        print(f"\n{len(g.nodes)} kernels rendered in {out / 'kernels'} (kaggle kernels push -p {out / 'kernels'}/<slug>)")
        return 0

    from .client import KaggleError
    from .push import Poll, Pusher, parse_limits, pull, status_table
    from .state import State

    state = State(out / "state.json", g.user)
    if a.cmd == "status":
        client = None if a.offline else _client()
        print(G.text(g, status_table(g, state, client)))
        return 0
    if a.cmd == "pull":
        client = _client()
        try:
            return pull(g, state, client, Path(a.dest) if a.dest else out / "input", a.only)
        except KaggleError as exc:
            print(f"stopped: {exc}")
            return 1

    _fail_on(errors)
    limits = parse_limits(a.max_sessions)
    g.select(a.only)  # unknown names fail before anything is written
    if a.from_stage:
        g.select([a.from_stage])
    client = None if a.dry_run else _client()
    G.render(g, out / "kernels")
    errors, warnings = G.check(g, out / "kernels")
    _fail_on(errors)
    for w in warnings:
        print(f"warning: {w}")
    from .render import dataset_dir

    pusher = Pusher(g, client, state, out / "kernels", dataset_dir(out, g.user), limits=limits,
                    poll=Poll(first_s=a.poll), sleep=sleep, clock=clock)
    print(G.text(g))
    try:
        return pusher.run(a.only, a.from_stage, a.dry_run)
    except KaggleError as exc:  # the state file already says where the run stopped
        print(f"stopped: {exc}")
        return 1
