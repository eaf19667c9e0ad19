"""``python -m siimcovid rehearse``: the push rehearsed here, as Kaggle will run it.

``run-local`` runs the source notebooks in this checkout's venv with every input linked in; it
cannot see the breaks that only a pushed graph meets. The rehearsal differs in exactly those places:

1. The kernels are rendered as ``kaggle push`` renders them (``graph.render``, the utils dataset
   staged as it is uploaded), and the rendered notebook is what runs.
2. Every input only Kaggle has gets a stand-in named by its real handle: each Kaggle Model at
   ``/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>`` (a tiny SavedModel).
   The two online kernels run too, without network, with the profile's plan-only settings: the
   wheels kernel records the GPU image and the requirement list (every later kernel then runs its
   real offline ``pip install --no-index`` of its lines, which this venv already satisfies), and the
   weights kernel's plan is overlaid with every file under its real name, holding no weights
   (:func:`siimcovid.kaggle.weights.stand_ins`).
3. Each kernel runs in its own Linux namespaces (``unshare -n -m``): no network at all (only a
   loopback for the notebook's own kernel), a private ``/kaggle`` with ``/kaggle/input`` holding
   ONLY the sources its kernel-metadata.json lists, each bind-mounted read-only, and
   ``/kaggle/working`` as its working folder. The package is hidden from the venv, so the notebook
   finds it as on Kaggle: in the mounted utils dataset. ``KAGGLE_KERNEL_RUN_TYPE`` is set.
4. The image variant is the one the kernel gets: the GPU image's torch build string (``+cu128``) for
   GPU kernels, the CPU image's (``+cpu``) for CPU kernels, so checks across images run for real.

Points 3 and 4 are enforced by a ``sitecustomize`` that only this runner puts on the path (it hides
the editable install, reports the image's torch build, and records any attempt to connect anywhere
but loopback). ``DIR/rehearsal.json`` records each kernel (ok | failed, its inputs, wall time), the
inference kernel's members (``member, fold, used, reason``) and how the network was cut. A failed
kernel, a missing input, a skipped member or an attempted connection fails the rehearsal.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from . import graph as G

REPORT = "rehearsal.json"
UTILS_SLUG = "siimcovid-utils"
WEIGHTS_SLUG = "siimcovid-weights"
# torch's build strings on today's images (the GPU image: +cu128; the CPU image: +cpu)
IMAGE_BUILD = {"gpu": "cu128", "tpu": "cpu", "cpu": "cpu"}
NETWORK = ("off (each kernel in its own network namespace: `unshare -n`, loopback only, no route out; "
           "connection attempts to anything but loopback are also recorded and fail the rehearsal)")

_SITECUSTOMIZE = r'''
# Written by siimcovid.kaggle.rehearse for one rehearsed kernel; not part of the package.
import json, os, sys
# settings beside this file, not in the environment: every process of the kernel reads them
_cfg = json.load(open(os.path.join(os.path.dirname(__file__), "rehearsal_site.json")))
_image, _netlog, _hidden = _cfg["torch_build"], _cfg["netlog"], set(_cfg.get("hidden", ()))
# the package comes from the mounted utils dataset, as on Kaggle: hide the venv's editable install
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
                    and "__editable__" not in type(f).__module__]
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("utils_dataset")]
if _hidden:  # what the Kaggle image lacks and this kernel's wheel groups do not install
    import importlib.abc as _abc
    class _Hidden(_abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _hidden:
                raise ModuleNotFoundError(f"No module named {name!r} (not in the Kaggle image, and not in the "
                                          "wheel groups this kernel installs)", name=name)
            return None
    sys.meta_path.insert(0, _Hidden())
if _image:
    import importlib.metadata as _md
    _version = _md.version
    def version(name, _v=_version):
        v = _v(name)
        return f"{v.split('+')[0]}+{_image}" if name == "torch" else v
    _md.version = version
if _netlog:
    import socket as _s
    _connect = _s.socket.connect
    def connect(self, address, _c=_connect):
        host = address[0] if isinstance(address, tuple) else address
        # the notebook's own Jupyter kernel talks over 127.0.0.1; anything else is reaching out
        if self.family in (_s.AF_INET, _s.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            with open(_netlog, "a") as fh:
                fh.write(f"{host}:{address[1] if isinstance(address, tuple) else ''}\n")
        return _c(self, address)
    _s.socket.connect = connect
'''


def unshare_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if not shutil.which("unshare"):
        return "no `unshare` on PATH (util-linux)"
    if not shutil.which("ip"):
        return "no `ip` on PATH (iproute2: it brings up the namespace's loopback for the notebook's kernel)"
    probe = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"`unshare -n -m` refused: {probe.stderr.strip()[:200]} (needs root or user namespaces)"
    return None


def input_rel(kind: str, source: str) -> str:
    """Where Kaggle mounts a source under /kaggle/input (the nested layout)."""
    if kind == "competition":
        return f"competitions/{source}"
    if kind == "dataset":
        return f"datasets/{source}"
    if kind == "kernel":
        return f"notebooks/{source}"
    return f"models/{source}"  # owner/model/framework/variation/version


def sources(meta: dict) -> list[tuple[str, str]]:
    """(kind, handle) of every input a rendered kernel-metadata.json lists."""
    out = [("competition", c) for c in meta.get("competition_sources") or []]
    out += [("dataset", d) for d in meta.get("dataset_sources") or []]
    out += [("kernel", k) for k in meta.get("kernel_sources") or []]
    out += [("model", m) for m in meta.get("model_sources") or []]
    return out


def hidden_modules(kernel: str) -> list[str]:
    """Top-level modules a kernel would not find on Kaggle: those of the wheel set's packages that the
    image lacks and that the kernel's groups (``wheels.KERNEL_NEEDS``, by notebook name) do not install.
    This venv has every package, so without hiding them a missing group would pass here and fail there."""
    from importlib.metadata import packages_distributions

    from .image import load
    from .wheels import KERNEL_NEEDS, REQUIREMENT_GROUPS, _norm

    image = {_norm(n) for n in load().packages} | {"setuptools"}  # the image has its own setuptools
    installs = {_norm(n) for g in KERNEL_NEEDS.get(kernel, ()) for n in REQUIREMENT_GROUPS[g]}
    absent = {_norm(n) for names in REQUIREMENT_GROUPS.values() for n in names} - installs - image
    return sorted(mod for mod, dists in packages_distributions().items()
                  if not mod.startswith("_") and dists and all(_norm(d) in absent for d in dists))


def make_model_stand_in(folder: Path) -> None:
    """A Kaggle Model (TF Hub feature vector) stand-in: a tiny SavedModel of the same interface."""
    from ..classify.backbones import export_tiny_savedmodel

    if not (folder / "saved_model.pb").is_file():
        export_tiny_savedmodel(folder, width=8)


def _mount_script(mounts: list[tuple[Path, str]], working: Path, cmd: list[str]) -> str:
    # /kaggle (empty) is the mount point on the host; the namespace's tmpfs over it holds input/ and working/
    lines = ["set -e", "ip link set lo up", "mkdir -p /kaggle", "mount -t tmpfs -o size=64m siim-kaggle /kaggle",
             "mkdir -p /kaggle/input /kaggle/working"]
    for src, rel in mounts:
        dst = shlex.quote(f"/kaggle/input/{rel}")
        lines += [f"mkdir -p {dst}", f"mount --bind {shlex.quote(str(src))} {dst}",
                  f"mount -o remount,bind,ro {dst}"]
    lines += [f"mount --bind {shlex.quote(str(working))} /kaggle/working", "cd /kaggle/working",
              "exec " + " ".join(shlex.quote(c) for c in cmd)]
    return "\n".join(lines)


def members_of(summary: dict) -> list[dict]:
    """The inference kernel's members (``member, fold, used, reason``) from its inference.json: every
    fold report in it (study folds, and each binary / detector member's folds)."""
    rows: list[dict] = []

    def visit(name: str, node: Any) -> None:
        if isinstance(node, dict):
            folds = node.get("folds")
            if isinstance(folds, dict) and all(isinstance(v, dict) and "status" in v for v in folds.values()):
                for fold, v in folds.items():
                    rows.append({"member": name, "fold": Path(fold).name, "path": fold,
                                 "used": v["status"] == "used", "reason": v.get("reason", "")})
                return
            for k, v in node.items():
                visit(k if name in ("", "predict") else name, v)

    visit("study", summary.get("study") or {})
    visit("", (summary.get("ensemble") or {}).get("predict") or {})
    return rows


class Rehearsal:
    def __init__(self, graph: G.Graph, data: Path, out: Path, profile: dict,
                 echo: Callable[[str], None] = print, timeout: float = 3600, inputs: Path | None = None):
        self.graph, self.data, self.out, self.profile, self.echo = graph, data, out, profile, echo
        self.inputs = inputs  # stand-ins for other competitions / datasets, in the /kaggle/input layout
        self.timeout = timeout
        self.kernels_dir = out / "kernels"
        self.run_dir = out / "run"
        self.stand_in_dir = out / "stand-ins"
        self.report: dict = {"profile": profile["name"], "network": NETWORK, "kernels": [], "members": [],
                             "stand_ins": [], "problems": []}

    # -- inputs
    def _kernel_output(self, slug: str) -> Path:
        return self.run_dir / slug / "working"

    def prepare(self) -> None:
        from .render import dataset_dir

        self.kernels_dir.mkdir(parents=True, exist_ok=True)
        G.render(self.graph, self.kernels_dir)  # exactly what `kaggle push` uploads
        self.utils = dataset_dir(self.out, self.graph.user)  # staged as `kaggle push` uploads it
        models = sorted({m for n in self.graph.order() for m in n.kernel.metadata.get("model_sources") or []})
        for handle in models:
            make_model_stand_in(self.stand_in_dir / "models" / handle)
            self.report["stand_ins"].append({"input": f"models/{handle}", "what": "tiny SavedModel (Kaggle Model)"})

    def resolve(self, kind: str, handle: str) -> Path | None:
        """The local folder standing for one source, None when it has none here."""
        from ..paths import COMPETITION
        from .local import stand_in

        if kind == "competition":
            return self.data if handle == COMPETITION else stand_in(self.inputs, input_rel(kind, handle))
        if kind == "dataset":
            return self.utils if handle.split("/")[-1] == UTILS_SLUG else stand_in(self.inputs, input_rel(kind, handle))
        if kind == "kernel":
            slug = handle.split("/")[-1]
            out = self._kernel_output(slug)
            ok = out.is_dir() and any(r["slug"] == slug and r["status"] == "ok" for r in self.report["kernels"])
            return out if ok else None
        folder = self.stand_in_dir / "models" / handle
        return folder if folder.is_dir() else None

    # -- one kernel
    def run_kernel(self, node: G.Node) -> dict:
        meta = json.loads((self.kernels_dir / node.slug / "kernel-metadata.json").read_text())
        row: dict = {"slug": node.slug, "status": "failed", "inputs": [], "wall_s": 0.0,
                     "image": IMAGE_BUILD[node.session_class]}
        mounts, missing = [], []
        for kind, handle in sources(meta):
            rel = input_rel(kind, handle)
            src = self.resolve(kind, handle)
            row["inputs"].append(rel)
            (missing.append(f"{kind} {handle}") if src is None else mounts.append((src.resolve(), rel)))
        if missing:
            row["reason"] = "inputs missing here: " + ", ".join(missing)
            return row
        kdir = self.run_dir / node.slug
        working = self._kernel_output(node.slug)
        shutil.rmtree(working, ignore_errors=True)
        working.mkdir(parents=True)
        site = kdir / "site"
        site.mkdir(parents=True, exist_ok=True)
        netlog = kdir / "network.log"
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        row["hidden"] = hidden_modules(node.kernel.notebook.stem)
        (site / "rehearsal_site.json").write_text(json.dumps({"torch_build": row["image"], "netlog": str(netlog),
                                                              "hidden": row["hidden"]}))
        netlog.unlink(missing_ok=True)
        nb_in = self.kernels_dir / node.slug / meta["code_file"]
        nb_out = kdir / meta["code_file"]
        from .render import fill_placeholders

        # the profile's {kernel_dir} / {work} are this kernel's folder: /kaggle/working, as on Kaggle
        params = fill_placeholders(self.profile["params"].get(node.stage, {}),
                                   {"kernel_dir": "/kaggle/working", "work": "/kaggle/working"})
        import yaml

        cmd = [sys.executable, "-m", "papermill", str(nb_in), str(nb_out), "-y", yaml.safe_dump(params),
               "--cwd", "/kaggle/working", "-k", "python3", "--no-progress-bar"]
        env = {k: v for k, v in os.environ.items() if k not in ("SIIM_INPUT", "PYTHONPATH", "KAGGLE_USERNAME",
                                                               "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
        env.update(PYTHONPATH=str(site), KAGGLE_KERNEL_RUN_TYPE="Batch", KAGGLE_URL_BASE="https://www.kaggle.com",
                   MPLBACKEND="Agg")
        script = _mount_script(mounts, working, cmd)
        log = kdir / "kernel.log"
        t0 = time.time()
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "bash", "-c", script],
                                    env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=self.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        row["wall_s"] = round(time.time() - t0, 1)
        reached = netlog.read_text().split() if netlog.is_file() else []
        if reached:
            row["reason"] = f"reached for the network: {', '.join(sorted(set(reached)))}"
        elif rc:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:]
            row["reason"] = f"exit {rc} (log: {log}): " + " | ".join(tail)
        else:
            row["status"] = "ok"
        return row

    def run(self) -> int:
        self.prepare()
        for node in self.graph.order():
            self.echo(f"{node.slug}: running (image: torch +{IMAGE_BUILD[node.session_class]}) ...")
            row = self.run_kernel(node)
            self.report["kernels"].append(row)
            self.echo(f"{node.slug}: {row['status']} in {row['wall_s']:.0f} s" +
                      (f": {row['reason']}" if row.get("reason") else ""))
            self._write()
            if row["status"] != "ok":
                self.report["problems"].append(f"{node.slug}: {row['reason']}")
                break
            if node.slug == WEIGHTS_SLUG:  # it could only plan without network: its files stood in
                from .weights import stand_ins

                stand_ins(self._kernel_output(WEIGHTS_SLUG) / "weights")
                self.report["stand_ins"].append({"input": f"notebooks/{self.graph.user}/{WEIGHTS_SLUG}",
                                                 "what": "every pretrained file under its real name, no weights in it"})
        self._members()
        self._inits()
        self._write()
        return 1 if self.report["problems"] else 0

    def _inits(self) -> None:
        """Every fold of a kernel the graph wired to a pre-training (``init_from`` = its stage) must
        have started from that kernel's mounted weights: a fold that quietly fell back to the COCO or
        ImageNet start would look the same from outside."""
        from ..pretrain.outputs import STAGES
        from ..runs import INIT_WEIGHTS, find_runs, read_config

        self.report["inits"] = []
        for node in self.graph.order():
            stage = node.kernel.params.get("init_from")
            out = self._kernel_output(node.slug)
            if stage not in STAGES or not out.is_dir():
                continue
            mounts = tuple(f"/kaggle/input/{input_rel('kernel', f'{self.graph.user}/{u}')}/" for u in node.upstream
                           if self.graph.nodes[u].stage == stage)
            for fold in find_runs([out], problems=[]):
                start = (read_config(fold) or {}).get(INIT_WEIGHTS)
                ok = bool(mounts) and str(start or "").startswith(mounts)
                self.report["inits"].append({"slug": node.slug, "fold": fold.name, "init_from": stage,
                                             "start": start, "ok": ok})
                if not ok:
                    self.report["problems"].append(f"{node.slug}: {fold.name} was wired to {stage} but started "
                                                   f"from {start or 'random init'}")

    def _members(self) -> None:
        inf = [n for n in self.graph.order() if n.stage == "inference"]
        if not inf:
            return
        from ..inference import SUMMARY

        path = self._kernel_output(inf[0].slug) / SUMMARY
        if not path.is_file():
            if not self.report["problems"]:
                self.report["problems"].append(f"{inf[0].slug}: no {SUMMARY} written")
            return
        self.report["members"] = members_of(json.loads(path.read_text()))
        for m in self.report["members"]:
            if not m["used"]:
                self.report["problems"].append(f"{inf[0].slug}: member {m['member']} {m['fold']} skipped: {m['reason']}")
        if not self.report["members"]:
            self.report["problems"].append(f"{inf[0].slug}: no member predicted")
        # every fold a kernel of the graph trained must be one the inference kernel used: a fold kernel
        # missing from its kernel_sources would otherwise just shrink the ensemble, silently
        from ..runs import find_runs

        used = [m["path"] for m in self.report["members"] if m["used"]]
        for node in self.graph.order():
            out = self._kernel_output(node.slug)
            if node.stage == "inference" or not out.is_dir():
                continue
            # its folds reach inference directly, or copied by a collect kernel that reads it
            via = [node.slug] + [c.slug for c in self.graph.order() if c.generated and node.slug in c.upstream]
            mounted = tuple(f"/kaggle/input/{input_rel('kernel', f'{self.graph.user}/{v}')}/" for v in via)
            folds = find_runs([out], problems=[])
            if folds and not any(u.startswith(mounted) for u in used):
                self.report["problems"].append(
                    f"{inf[0].slug}: used none of the {len(folds)} fold(s) {node.slug} trained (is it in the "
                    "inference kernel's kernel_sources?)")

    def _write(self) -> None:
        tmp = self.out / f".{REPORT}.tmp"
        tmp.write_text(json.dumps(self.report, indent=1) + "\n")
        os.replace(tmp, self.out / REPORT)


def cli(argv: list[str]) -> int:
    from .local import load_profile

    ap = argparse.ArgumentParser(prog="python -m siimcovid rehearse",
                                 description="Render the kernels as `kaggle push` does and run each rendered "
                                             "notebook as Kaggle would: only its listed inputs, read-only, "
                                             "no network, its image's build strings.")
    ap.add_argument("--profile", default="tiny", help="tiny | demo | a profile .yaml (configs/local/)")
    ap.add_argument("--out", required=True, help="rendered kernels, each kernel's working folder, rehearsal.json")
    ap.add_argument("--data", required=True, help="the competition folder (e.g. from `siimcovid synth`)")
    ap.add_argument("--include", nargs="+", default=[], metavar="STAGE",
                    help="optional stages to add (preprocess-external, pretrain-det, pretrain-cls)")
    ap.add_argument("--inputs", default=None, help="stand-ins for the other inputs, laid out as /kaggle/input "
                    "(`siimcovid synth-external` writes one)")
    ap.add_argument("--user", default="rehearsal", help="the owner name of every handle")
    ap.add_argument("--templates", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per kernel")
    a = ap.parse_args(argv)
    why = unshare_available()
    if why:
        raise UserError(f"rehearse: cannot cut the network and mount inputs read-only here: {why}")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    profile = load_profile(a.profile)
    data = Path(a.data).resolve()
    if not data.is_dir():
        raise UserError(f"--data {data}: no such folder (the competition folder, e.g. from `siimcovid synth`)")
    graph = G.build(a.user, meta_dir=a.templates, repeat=profile["repeat"], include=a.include)
    print(G.text(graph))
    inputs = Path(a.inputs).resolve() if a.inputs else None
    if inputs is not None and not inputs.is_dir():
        raise UserError(f"--inputs {a.inputs}: no such folder")
    t0 = time.time()
    rc = Rehearsal(graph, data, out, profile, timeout=a.timeout, inputs=inputs).run()
    report = json.loads((out / REPORT).read_text())
    used = sum(m["used"] for m in report["members"])
    print(f"rehearsal: {sum(k['status'] == 'ok' for k in report['kernels'])}/{len(graph.nodes)} kernels ok, "
          f"{used}/{len(report['members'])} member folds used, {time.time() - t0:.0f} s; {out / REPORT}")
    for p in report["problems"]:
        print(f"rehearsal FAILED: {p}", file=sys.stderr)
    return rc

