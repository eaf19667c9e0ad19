"""``python -m siimcovid kaggle render|plan|dataset|push|status|pull``: the kernel graph on Kaggle,
the project's one command group for it.

Everything lands in ``--out`` (default ``build/kaggle``): ``kernels/<slug>/`` (rendered kernels),
``siimcovid-utils/`` (the staged utils dataset), ``state.json`` (what was pushed, see state.py)
and, for ``pull``, ``input/`` laid out as the kernels see /kaggle/input. ``render`` and ``dataset``
need no credentials (``--placeholder-user`` writes ``KAGGLE_USER`` ids on purpose); ``push`` is the
orchestrated one: the dataset, then every kernel in graph order, waiting for each.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import UserError
from . import graph as G
from .render import PLACEHOLDER_USER

DEFAULT_OUT = "build/kaggle"


def _user(p: argparse.ArgumentParser, placeholder: bool = False) -> None:
    p.add_argument("--user", default=None,
                   help="your Kaggle user name (default: $KAGGLE_USERNAME, then the one in kaggle.json)")
    if placeholder:
        p.add_argument("--placeholder-user", action="store_true",
                       help=f"write {PLACEHOLDER_USER}/<slug> ids when no user is known (fill in before pushing)")
    p.add_argument("--out", default=DEFAULT_OUT, help="rendered kernels, staged dataset and state.json")


def _common(p: argparse.ArgumentParser, placeholder: bool = False) -> None:
    _user(p, placeholder)
    p.add_argument("--max-fan-in", type=int, default=G.MAX_FAN_IN,
                   help="a kernel reading more kernels than this reads collect-<stage> kernels instead")
    p.add_argument("--templates", default=None, help=argparse.SUPPRESS)  # another kernel-metadata/ (tests)
    p.add_argument("--include", nargs="+", default=(), metavar="STAGE",
                   help="optional stages to add to the graph (templates with `_render.optional`, e.g. "
                        "preprocess-external)")


def _choices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default=None,
                   help="accelerator id for the kernels whose template offers it (kernel-metadata `_render."
                        "accelerators`, e.g. NvidiaL4); the other kernels keep theirs")
    p.add_argument("--docker-image", default=None,
                   help="image for the wheels kernel and every kernel installing its output")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m siimcovid kaggle", description="Render, plan, push, watch "
                                 "and pull the pipeline's kernel graph on Kaggle.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render", help="write OUT/kernels/<slug>/ for every kernel (checked first) and list them; "
                                      "no credentials needed")
    _common(p, placeholder=True)
    _choices(p)
    _recipe_arg(p)
    p = sub.add_parser("plan", help="render every kernel, validate, print the graph")
    _common(p)
    _choices(p)
    p.add_argument("--budget", default=None,
                   help="JSON {stage: seconds per test image per kernel}: warn when inference may pass 9 h")
    _costs_args(p)
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
    _costs_args(p)
    p = sub.add_parser("status", help="the graph with each kernel's pushed version and state")
    _common(p)
    p.add_argument("--offline", action="store_true", help="only the state file, no kaggle call")
    _recipe_arg(p)
    p.add_argument("--only", nargs="+", default=None, help="stages, slugs or slug prefixes to ask Kaggle about")
    p = sub.add_parser("pull", help="outputs + logs of completed versions, laid out like /kaggle/input")
    _common(p)
    p.add_argument("--dest", default=None, help="default: OUT/input")
    _recipe_arg(p)
    p.add_argument("--only", nargs="+", default=None, help="stages, slugs or slug prefixes")
    p = sub.add_parser("dataset", help="stage utils_dataset/ as OUT/siimcovid-utils for a manual "
                                       "`kaggle datasets create|version -r zip` (push uploads it itself)")
    _user(p, placeholder=True)
    return ap


def _recipe_arg(p: argparse.ArgumentParser) -> None:
    from ..recipe import DEFAULT, names

    p.add_argument("--recipe", default=DEFAULT, choices=names(),
                   help="configs/recipe/<name>.yaml: the optional stages, notebook parameters and members")


def _costs_args(p: argparse.ArgumentParser) -> None:
    from ..costs import WEEKLY_QUOTA_H

    _recipe_arg(p)
    p.add_argument("--quota-hours", type=float, default=WEEKLY_QUOTA_H,
                   help="weekly GPU quota the graph's projected hours are held against (push refuses above it)")
    p.add_argument("--costs", default=None, help="a `bench models` models.json (default: the committed "
                                                  "configs/costs/measured.json)")


def _cost_plan(a, nodes: list[G.Node]):
    """The cost model (siimcovid.costs) over ``nodes``: hours per kernel, the total, the 9-hour check."""
    from .. import costs

    kernels = [(n.slug, n.stage, n.session_class) for n in nodes]
    return costs.plan(kernels, costs.read_measured(a.costs), a.recipe, a.quota_hours)


def _user_name(a) -> str:
    from .render import resolve_user

    user, source = resolve_user(a.user, getattr(a, "placeholder_user", False))
    if a.cmd in ("render", "dataset"):  # the verbs that write ids without asking Kaggle say whose
        print(f"user {user} (from {source})", file=sys.stderr)
    return user


def _graph(a) -> G.Graph:
    from .render import choose

    from .. import recipe as R

    chosen = R.load(getattr(a, "recipe", None))
    include = list(dict.fromkeys([*chosen.include, *a.include]))
    graph = G.build(_user_name(a), meta_dir=a.templates, max_fan_in=a.max_fan_in, include=include)
    R.apply(graph, chosen)
    # the user's accelerator / image, each only where the templates allow it (kaggle.choose)
    choose([n.kernel for n in graph.order()], getattr(a, "accelerator", None), getattr(a, "docker_image", None))
    return graph


def _render(g: G.Graph, folder: Path) -> list[str]:
    """Every kernel written to ``folder/<slug>/``, checked before the first file and after the
    last; -> the warnings."""
    errors, _ = G.check(g)
    _fail_on(errors)
    G.render(g, folder)
    errors, warnings = G.check(g, folder)
    _fail_on(errors)
    return warnings


def _client():
    from .client import Client

    return Client()  # checks the credentials once (one line, exit 2) before anything is pushed


def _fail_on(errors: list[str]) -> None:
    if errors:
        raise UserError(f"{len(errors)} problem(s) Kaggle would refuse: " + "; ".join(errors))


def cli_kaggle(argv: list[str], sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time) -> int:
    a = parser().parse_args(argv)
    out = Path(a.out)
    if a.cmd == "dataset":
        from .render import dataset_dir

        dst = dataset_dir(out, _user_name(a))
        print(f"{dst}\n  first time: kaggle datasets create -p {dst} -r zip\n"
              f"  later:      kaggle datasets version -p {dst} -m 'update' -r zip")
        return 0
    budget = json.loads(Path(a.budget).read_text()) if getattr(a, "budget", None) else None
    g = _graph(a)
    if a.cmd in ("render", "plan"):
        warnings = _render(g, out / "kernels")
        if a.cmd == "render":
            for n in g.order():
                print(f"{out / 'kernels' / n.slug}  ({n.id}, {n.kernel.accelerator}, "
                      f"internet={n.kernel.metadata['enable_internet']})")
            return 0
        print(G.text(g))
        print("\n".join(_cost_plan(a, g.order()).lines()))
        from .. import recipe as R

        for note in R.load(getattr(a, "recipe", None)).notes:
            print(f"recipe {a.recipe}: {note}")
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
        print(G.text(g, status_table(g, state, client, a.only)))
        return 0
    if a.cmd == "pull":
        client = _client()
        try:
            return pull(g, state, client, Path(a.dest) if a.dest else out / "input", a.only)
        except KaggleError as exc:
            print(f"stopped: {exc}")
            return 1

    _fail_on(G.check(g)[0])
    limits = parse_limits(a.max_sessions)
    g.select(a.only)  # unknown names fail before anything is written
    if a.from_stage:
        g.select([a.from_stage])
    client = None if a.dry_run else _client()  # a local check of the credentials, before anything is written
    for w in _render(g, out / "kernels"):
        print(f"warning: {w}")
    from .render import dataset_dir

    pusher = Pusher(g, client, state, out / "kernels", dataset_dir(out, g.user), limits=limits,
                    poll=Poll(first_s=a.poll), sleep=sleep, clock=clock)
    # what this push would start (a kernel that completed this rendering, or is running it, is not
    # pushed again), against the week's quota
    selected, forced = pusher.targets(a.only, a.from_stage)
    cost = _cost_plan(a, [n for n in selected if n.slug in forced
                          or not (pusher._up_to_date(n) or pusher._in_flight(n))])
    print("\n".join(cost.lines()))
    if not a.dry_run and not cost.fits_quota:  # before any upload or push: nothing half-pushed
        from ..costs import quota_error

        print(f"stopped: {quota_error(cost)}")
        return 1
    print(G.text(g))
    try:
        return pusher.run(a.only, a.from_stage, a.dry_run)
    except KaggleError as exc:  # the state file already says where the run stopped
        print(f"stopped: {exc}")
        return 1
