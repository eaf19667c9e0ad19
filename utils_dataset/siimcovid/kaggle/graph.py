"""The pipeline as a graph of Kaggle kernels, built from the ``kernel-metadata/*.json`` templates.

A template names the stages it reads with ``"_render": {"needs": [...]}`` (a top-level ``"needs"``
is accepted too and stripped before rendering). An entry is a template name (every kernel of that
template) or ``{"stage": NAME, "match": {"fold": "{fold}"}}`` (only the kernels whose ``repeat``
values match, placeholders filled from this kernel's own values). ``kernel_sources`` of every
kernel is generated from these edges; a hand-written list in a template is replaced (and reported).
An entry may add ``"if_present": true`` (the edge exists only when that stage is in the graph: an
optional stage such as pretrain-det) and ``"params": {...}`` (notebook parameters the kernel gets with
the edge, e.g. ``{"init_from": "pretrain-det"}``), so a kernel source and the setting that reads it
are never one without the other.

Fan-in: when a kernel would read more kernels than ``max_fan_in``, the largest upstream stages are
collected through one ``siimcovid-collect-<stage>`` kernel each (``notebooks/collect``), which copies
its inputs' outputs into one tree.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from . import render as kaggle
from ..costs import HIDDEN_TEST_IMAGES, INFERENCE_LIMIT_H, INFERENCE_MARGIN
from ..errors import UserError

NEEDS_KEY = "needs"
# `"_render": {"optional": true}`: the template joins the graph only when a run names it (`--include
# STAGE`): a kernel such as preprocess-external reads inputs (other competitions' data) the default
# pipeline neither attaches nor rehearses.
OPTIONAL_KEY = "optional"
UTILS_DATASET = "{user}/siimcovid-utils"
COLLECT_NOTEBOOK = "notebooks/collect.ipynb"
# No limit is written in the kaggle client (2.2.5); the server's is not documented. Past this many
# inputs a kernel reads collected stages instead (also keeps the input folder browsable).
MAX_FAN_IN = 20
# The code competition's 9 hours and the hidden test's size: siimcovid.costs holds Kaggle's limits.
INFERENCE_LIMIT_S = INFERENCE_LIMIT_H * 3600

LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
PINNING_TYPES = ("original", "latest")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class Node:
    """One kernel of the graph."""

    kernel: kaggle.Kernel
    stage: str  # template name, or collect-<stage> for a generated collector
    values: dict[str, Any] = field(default_factory=dict)  # this kernel's repeat values
    upstream: list[str] = field(default_factory=list)  # slugs, in graph order
    generated: bool = False

    @property
    def slug(self) -> str:
        return self.kernel.slug

    @property
    def id(self) -> str:
        return self.kernel.metadata["id"]

    @property
    def accelerator(self) -> str:
        """``machine_shape`` when the template names one, else gpu / tpu / cpu from the flags."""
        m = self.kernel.metadata
        return m.get("machine_shape") or ("tpu" if m.get("enable_tpu") else "gpu" if m.get("enable_gpu") else "cpu")

    @property
    def session_class(self) -> str:
        """cpu | gpu | tpu: the pool whose concurrent-session limit this kernel counts against."""
        acc = self.accelerator.lower()
        return "tpu" if "tpu" in acc else "gpu" if (acc == "gpu" or acc.startswith("nvidia")) else "cpu"


@dataclass
class Graph:
    user: str
    nodes: dict[str, Node]  # slug -> node, in topological order
    notes: list[str] = field(default_factory=list)  # things the user should know (hand-written lists...)
    left_out: list[str] = field(default_factory=list)  # optional stages not included in this graph

    def order(self) -> list[Node]:
        return list(self.nodes.values())

    def stages(self) -> list[str]:
        return list(dict.fromkeys(n.stage for n in self.nodes.values()))

    def by_stage(self, stage: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.stage == stage]

    def downstream(self, slugs: set[str]) -> set[str]:
        """``slugs`` and every kernel that reads them, directly or not."""
        out = set(slugs)
        for n in self.nodes.values():  # topological order: one pass suffices
            if any(u in out for u in n.upstream):
                out.add(n.slug)
        return out

    def select(self, names: list[str] | None) -> list[Node]:
        """Kernels named by stage, slug or slug prefix; all of them when ``names`` is empty."""
        if not names:
            return self.order()
        out, unknown = [], []
        for name in names:
            hit = [n for n in self.nodes.values() if name in (n.stage, n.slug) or n.slug.startswith(name)]
            (out.extend(hit) if hit else unknown.append(name))
        if unknown:
            raise UserError(f"no kernel or stage named {unknown}; stages: {', '.join(self.stages())}")
        keep = {n.slug for n in out}
        return [n for n in self.order() if n.slug in keep]

    def sinks(self) -> list[Node]:
        read = {u for n in self.nodes.values() for u in n.upstream}
        return [n for n in self.nodes.values() if n.slug not in read]


def _needs_of(name: str, tpl: dict) -> list:
    needs = tpl.get(NEEDS_KEY, tpl.get("_render", {}).get(NEEDS_KEY, []))
    if isinstance(needs, (str, dict)):
        needs = [needs]
    if not isinstance(needs, list):
        raise UserError(f"kernel-metadata/{name}.json: `needs` must be a list of stage names")
    return needs


def _repeat_values(tpl: dict) -> list[dict[str, Any]]:
    repeat = tpl.get("_render", {}).get("repeat", {})
    keys = list(repeat)
    return [dict(zip(keys, v)) for v in product(*(repeat[k] for k in keys))] if keys else [{}]


def _clean_template(tpl: dict, repeat: dict | None) -> dict:
    """The template as kaggle.expand wants it: no graph keys, repeat values overridden (profiles)."""
    tpl = copy.deepcopy(tpl)
    tpl.pop(NEEDS_KEY, None)
    render = tpl.setdefault("_render", {})
    render.pop(NEEDS_KEY, None)
    render.pop(OPTIONAL_KEY, None)
    if repeat:
        render["repeat"] = {**render.get("repeat", {}), **repeat}
    return tpl


def _resolve(entry: Any, node: Node, by_stage: dict[str, list[Node]], template: str) -> list[Node]:
    if isinstance(entry, str):
        stage, match = entry, {}
    elif isinstance(entry, dict) and "stage" in entry:
        stage, match = entry["stage"], entry.get("match", {})
    else:
        raise UserError(f"kernel-metadata/{template}.json: bad `needs` entry {entry!r}: "
                        "use a stage name or {\"stage\": NAME, \"match\": {...}}")
    if stage not in by_stage and isinstance(entry, dict) and entry.get("if_present"):
        return []
    if stage not in by_stage:
        raise UserError(f"kernel-metadata/{template}.json: needs unknown stage {stage!r}; "
                        f"stages: {', '.join(sorted(by_stage))}")
    subs = {"user": node.kernel.metadata["id"].split("/")[0], **node.values}
    want = {k: str(v).format(**subs) for k, v in match.items()}
    hits = [u for u in by_stage[stage] if all(str(u.values.get(k)) == v for k, v in want.items())]
    if not hits:
        raise UserError(f"kernel-metadata/{template}.json: `needs` {entry!r} matches no kernel of {stage!r}")
    return hits


def _topological(nodes: dict[str, Node], rank: dict[str, int] | None = None) -> dict[str, Node]:
    """Kahn's order; among the kernels that are ready, the lowest stage rank first, then the
    templates' own order, so the printed graph reads stage by stage."""
    rank = rank or {}
    index = {slug: i for i, slug in enumerate(nodes)}
    done: dict[str, Node] = {}
    pending = dict(nodes)
    while pending:
        ready = [n for n in pending.values() if all(u in done for u in n.upstream)]
        if not ready:
            raise UserError(f"kernel-metadata: the `needs` edges form a cycle among {sorted(pending)}")
        n = min(ready, key=lambda n: (rank.get(n.stage, 0), index[n.slug]))
        done[n.slug] = pending.pop(n.slug)
    return done


def _collect_node(stage: str, members: list[Node], user: str) -> Node:
    slug = f"siimcovid-collect-{stage}"
    meta = {
        "id": f"{user}/{slug}", "title": f"siimcovid collect {stage}", "code_file": "collect.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": False,
        "enable_tpu": False, "enable_internet": False, "dataset_sources": [UTILS_DATASET.format(user=user)],
        "competition_sources": [], "kernel_sources": [m.id for m in members], "model_sources": [],
        "keywords": [],
    }
    k = kaggle.Kernel(slug, meta, kaggle.repo_root() / COLLECT_NOTEBOOK, {}, f"collect-{stage}")
    return Node(k, f"collect-{stage}", {}, [m.slug for m in members], generated=True)


def _limit_fan_in(nodes: dict[str, Node], max_fan_in: int, user: str) -> None:
    collectors: dict[str, Node] = {}
    for node in list(nodes.values()):
        while len(node.upstream) > max_fan_in:
            groups: dict[str, list[str]] = {}
            for u in node.upstream:
                if not nodes[u].generated:
                    groups.setdefault(nodes[u].stage, []).append(u)
            groups = {s: us for s, us in groups.items() if len(us) > 1}
            if not groups:
                raise UserError(f"{node.slug} reads {len(node.upstream)} kernels (more than {max_fan_in}) "
                                "and no stage is left to collect: raise --max-fan-in")
            stage = max(groups, key=lambda s: (len(groups[s]), s))
            if stage not in collectors:
                members = [n for n in nodes.values() if n.stage == stage]
                collectors[stage] = _collect_node(stage, members, user)
                nodes[collectors[stage].slug] = collectors[stage]
            c = collectors[stage]
            gone = set(groups[stage])
            node.upstream = [u for u in node.upstream if u not in gone] + [c.slug]


def build(user: str, meta_dir: str | Path | None = None, max_fan_in: int = MAX_FAN_IN,
          repeat: dict[str, dict[str, list]] | None = None, root: Path | None = None,
          include: tuple[str, ...] | list[str] = ()) -> Graph:
    """The kernel graph for ``user``. ``repeat`` overrides templates' repeat values (e.g. a local
    profile's ``{"train-study-fold": {"fold": [0, 1]}}``); ``include`` names the optional templates
    (:data:`OPTIONAL_KEY`) that join it."""
    if not user or "/" in user or not _OWNER.match(user):
        raise UserError(f"--user {user!r} is not a Kaggle user name (letters, digits, - and _)")
    try:
        templates = kaggle.load_templates(meta_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    optional = {n for n, t in templates.items() if t.get("_render", {}).get(OPTIONAL_KEY)}
    asked = set(include or ())
    if asked - optional:
        raise UserError(f"--include {sorted(asked - optional)}: not optional stages; optional: {sorted(optional)}")
    templates = {n: t for n, t in templates.items() if n not in optional or n in asked}
    repeat = repeat or {}
    unknown = set(repeat) - set(templates)
    if unknown:
        raise UserError(f"repeat override for unknown stage(s) {sorted(unknown)}; stages: {sorted(templates)}")
    notes: list[str] = []
    nodes: dict[str, Node] = {}
    by_stage: dict[str, list[Node]] = {}
    needs: dict[str, list] = {}
    for name, tpl in templates.items():
        needs[name] = _needs_of(name, tpl)
        clean = _clean_template(tpl, repeat.get(name))
        try:
            kernels = kaggle.expand({name: clean}, user, root)
        except (ValueError, KeyError) as exc:
            raise UserError(f"kernel-metadata/{name}.json: {exc}") from exc
        values = _repeat_values(clean)
        if len(values) != len(kernels):  # kaggle.expand changed how it repeats
            raise RuntimeError(f"{name}: {len(kernels)} kernels for {len(values)} repeat values")
        for k, v in zip(kernels, values):
            if k.slug in nodes:
                raise UserError(f"kernel-metadata/{name}.json: id {k.metadata['id']} is also made by "
                                f"{nodes[k.slug].stage}")
            nodes[k.slug] = Node(k, name, v)
            by_stage.setdefault(name, []).append(nodes[k.slug])
    soft: dict[str, set[str]] = {}  # slug -> the upstream kernels its if_present entries added
    for name in templates:
        for node in by_stage[name]:
            ups: list[str] = []
            for entry in needs[name]:
                hits = _resolve(entry, node, by_stage, name)
                ups += [u.slug for u in hits if u.slug not in ups]
                if isinstance(entry, dict) and entry.get("if_present"):
                    soft.setdefault(node.slug, set()).update(u.slug for u in hits)
                if hits and isinstance(entry, dict) and entry.get("params"):
                    node.kernel.params.update(copy.deepcopy(entry["params"]))
            if node.slug in ups:
                raise UserError(f"kernel-metadata/{name}.json: {node.slug} needs itself")
            node.upstream = ups
    differ = set()  # templates still holding a hand-written list that disagrees with `needs`
    for n in nodes.values():
        hand = templates[n.stage].get("kernel_sources")
        # an if_present edge (to an optional stage) is not in the hand-written list: compare the rest
        fixed = {nodes[u].id for u in n.upstream if u not in soft.get(n.slug, set())}
        if hand and {h.replace("{user}", user) for h in hand} != fixed:
            differ.add(n.stage)
    notes += [f"kernel-metadata/{s}.json: its hand-written kernel_sources differ from the graph's and are "
              "replaced (declare the stages it reads in `_render.needs`)" for s in sorted(differ)]
    _limit_fan_in(nodes, max_fan_in, user)
    ordered = _topological(nodes)
    # rank stages by their deepest kernel, so the order reads as the pipeline runs
    depth: dict[str, int] = {}
    stage_rank: dict[str, int] = {}
    for n in ordered.values():
        depth[n.slug] = 1 + max((depth[u] for u in n.upstream), default=-1)
        stage_rank[n.stage] = max(stage_rank.get(n.stage, 0), depth[n.slug])
    ordered = _topological(nodes, stage_rank)
    for n in ordered.values():
        n.kernel.metadata["kernel_sources"] = [ordered[u].id for u in n.upstream]
    return Graph(user, ordered, notes, sorted(optional - asked))


# ------------------------------------------------------------------------------------------ checks
def _slugify(text: str) -> str:
    try:
        from slugify import slugify  # the kaggle client's own (python-slugify)
    except ImportError:  # pragma: no cover - kaggle depends on python-slugify
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slugify(text)


def _source_ok(s: Any, min_parts: int, max_parts: int) -> bool:
    if not isinstance(s, str) or any(c.isspace() for c in s):
        return False
    parts = s.split("/")
    return min_parts <= len(parts) <= max_parts and all(parts)


def check_kernel(node: Node, folder: Path | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one kernel: what `kaggle kernels push` (2.2.5) or the server refuses."""
    m, errors, warnings = node.kernel.metadata, [], []
    where = node.slug
    kid = m.get("id", "")
    parts = kid.split("/") if isinstance(kid, str) else []
    if len(parts) != 2 or not _OWNER.match(parts[0]) or not _SLUG.match(parts[1]):
        errors.append(f"{where}: id {kid!r} must be owner/slug (slug: lowercase letters, digits, -)")
    title = m.get("title") or ""
    if len(title) < 5:
        errors.append(f"{where}: title {title!r} is shorter than 5 characters (the client refuses it)")
    elif len(parts) == 2 and _slugify(title) != parts[1].lower():
        warnings.append(f"{where}: title {title!r} slugifies to {_slugify(title)!r}, not the id's slug "
                        f"{parts[1]!r}: Kaggle may name the kernel after the title")
    if len(title) > 50:
        warnings.append(f"{where}: title is {len(title)} characters; Kaggle titles are at most 50 (not verified)")
    if m.get("language") not in LANGUAGES:
        errors.append(f"{where}: language {m.get('language')!r} not in {LANGUAGES}")
    if m.get("kernel_type") not in KERNEL_TYPES:
        errors.append(f"{where}: kernel_type {m.get('kernel_type')!r} not in {KERNEL_TYPES}")
    pin = m.get("docker_image_pinning_type")
    if pin is not None and pin not in PINNING_TYPES:
        errors.append(f"{where}: docker_image_pinning_type {pin!r} not in {PINNING_TYPES}")
    if not isinstance(m.get("enable_internet"), bool):
        errors.append(f"{where}: enable_internet must be written out as true/false (the client assumes true)")
    for key in ("is_private", "enable_gpu", "enable_tpu"):
        if key in m and not isinstance(m[key], bool):
            errors.append(f"{where}: {key} must be true/false, not {m[key]!r}")
    if m.get("enable_gpu") and m.get("enable_tpu"):
        errors.append(f"{where}: enable_gpu and enable_tpu are both true")
    for key, lo, hi, form in (("dataset_sources", 2, 3, "owner/slug[/version]"),
                              ("kernel_sources", 2, 3, "owner/slug[/version]"),
                              ("model_sources", 5, 5, "owner/model/framework/variation/<int>"),
                              ("competition_sources", 1, 1, "slug")):
        for s in m.get(key) or []:
            if not _source_ok(s, lo, hi) or (key == "model_sources" and not s.split("/")[-1].isdigit()):
                errors.append(f"{where}: {key} entry {s!r} is not {form}")
    if not node.kernel.notebook.exists():
        errors.append(f"{where}: notebook {node.kernel.notebook} does not exist")
    if folder is not None and not (folder / (m.get("code_file") or "")).is_file():
        errors.append(f"{where}: code_file {m.get('code_file')!r} is not in {folder}")
    return errors, warnings


def check(graph: Graph, out_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) over the whole graph."""
    errors, warnings = [], list(graph.notes)
    for n in graph.order():
        e, w = check_kernel(n, (out_dir / n.slug) if out_dir else None)
        errors += e
        warnings += w
        offline_up = [u for u in n.upstream if not graph.nodes[u].kernel.metadata.get("enable_internet")]
        if n.kernel.metadata.get("enable_internet") and offline_up:
            warnings.append(f"{n.slug}: internet is on in a kernel that reads {', '.join(offline_up)} (only the "
                            "fetching kernels, wheels and weights, are online, and they read nothing but each other)")
    for n in graph.sinks():
        if n.kernel.metadata.get("enable_internet") and n.upstream:
            errors.append(f"{n.slug}: the final kernel must run with the internet off (code competition)")
    return errors, warnings


def budget_warnings(graph: Graph, seconds_per_image: dict[str, float] | None,
                    n_images: int = HIDDEN_TEST_IMAGES, limit_s: float = INFERENCE_LIMIT_S,
                    overhead_s: float = 0.0, margin: float = 1.0 - INFERENCE_MARGIN) -> list[str]:
    """Warnings when a final kernel's estimated run time passes ``margin`` of the limit.

    ``seconds_per_image``: upstream stage name -> seconds one of that stage's kernels (a fold, a
    member) costs per test image at inference, TTA included (the ensemble stage measures these).
    Every upstream kernel of a listed stage counts once; a collect kernel counts its members."""
    if not seconds_per_image:
        return []
    out = []
    for sink in graph.sinks():
        total, parts = overhead_s, []
        for u in sink.upstream:
            node = graph.nodes[u]
            members = [graph.nodes[m] for m in node.upstream] if node.generated else [node]
            for m in members:
                if m.stage in seconds_per_image:
                    total += seconds_per_image[m.stage] * n_images
                    parts.append(m.slug)
        if total > margin * limit_s:
            out.append(f"{sink.slug}: estimated {total / 3600:.1f} h for {n_images} images over {len(parts)} "
                       f"model kernels, above {margin:.0%} of the {limit_s / 3600:.0f} h limit")
    return out


# ------------------------------------------------------------------------------------------ output
def render(graph: Graph, out_dir: str | Path) -> Path:
    """Write ``out_dir/<slug>/kernel-metadata.json`` + the notebook (parameters baked in)."""
    out = Path(out_dir)
    for n in graph.order():
        d = out / n.slug
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel-metadata.json").write_text(json.dumps(n.kernel.metadata, indent=2) + "\n")
        nb = kaggle.inject_parameters(n.kernel.notebook, n.kernel.params)
        (d / n.kernel.metadata["code_file"]).write_text(json.dumps(nb, indent=1) + "\n")
    return out


def _compact(slugs: list[str]) -> str:
    if len(slugs) == 1:
        return slugs[0]
    m = re.match(r"^(.*?)(\d+)$", slugs[0])
    if m and all(re.match(rf"^{re.escape(m.group(1))}\d+$", s) for s in slugs):
        nums = [s[len(m.group(1)):] for s in slugs]
        return f"{m.group(1)}{{{','.join(nums)}}}"
    return f"{slugs[0]}, ... {slugs[-1]} ({len(slugs)})"


def text(graph: Graph, status: dict[str, str] | None = None) -> str:
    """The graph, one line per stage (kernels, accelerator, internet, what it reads), in run order.
    ``status``: slug -> a short state to show per kernel (`kaggle status`)."""
    lines = [f"{'stage':<26} {'kernels':<44} {'accel':<14} {'net':<4} reads"]
    for stage in graph.stages():
        nodes = graph.by_stage(stage)
        reads = list(dict.fromkeys(graph.nodes[u].stage for n in nodes for u in n.upstream))
        accel = ",".join(dict.fromkeys(n.accelerator for n in nodes))
        net = "on" if any(n.kernel.metadata.get("enable_internet") for n in nodes) else "off"
        lines.append(f"{stage:<26} {_compact([n.slug for n in nodes]):<44} {accel:<14} {net:<4} "
                     f"{', '.join(reads) or '-'}")
        if status:
            for n in nodes:
                lines.append(f"    {n.slug:<48} {status.get(n.slug, '-')}")
    return "\n".join(lines)
