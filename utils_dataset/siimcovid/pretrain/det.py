"""``python -m siimcovid pretrain-det``: a detector pre-trained on external boxes (RSNA Pneumonia, the
VinBigData opacity findings), whose weights start the detector folds (``siim.init_from='pretrain-det'``).

The rows of the external sets whose source says where the opacities are (``box_labelled`` = 1) at
the run's size, as one training table; the sets' own ``fold`` column holds one fold out, and its
out-of-fold opacity AP says whether the pre-training learned boxes at all. It trains with the same
code as a competition fold (:func:`siimcovid.detect.train.train_fold`), so resume, torchrun on two
GPUs, the exported ``model.pth`` and the figures are theirs. Writes ``<workdir>/pretrain/det/<variant>/``
and, last, the manifest (:mod:`siimcovid.pretrain.outputs`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..log import get_logger
from ..runs import MODEL_PTH, SCORES_JSON
from . import outputs

SOURCES = ("rsna", "vinbigdata")
STAGE = "pretrain-det"


def external_rows(sources, size: int, external=None) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """The box-labelled rows of every source found (under ``external`` or the inputs) at ``size``
    -> (rows as :func:`siimcovid.detect.coco.load_meta` gives them, the sources used, why each other
    one was skipped). No source at all, or no box-labelled row, is an error."""
    from ..detect import coco
    from ..layout import find_external

    frames, used, skipped = [], [], {}
    for source in sources:
        try:
            folder = find_external(source, external)
        except UserError as exc:
            skipped[source] = str(exc)
            continue
        meta = coco.load_meta(folder, size)
        labelled = pd.to_numeric(meta.get("box_labelled", 0), errors="coerce").fillna(0).astype(int) == 1
        frames.append(meta[labelled].assign(source=source))
        used.append(source)
    if not frames:
        raise UserError(f"{STAGE}: no external set found: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    rows = pd.concat(frames, ignore_index=True)
    dup = rows["image_id"][rows["image_id"].duplicated()]
    if len(dup):
        raise UserError(f"{STAGE}: image id {dup.iloc[0]!r} is in more than one external set ({len(dup)} such)")
    if not len(rows):
        raise UserError(f"{STAGE}: the sets {used} hold no box-labelled image (box_labelled = 1)")
    return rows, used, skipped


def pretrain(cfg, sources=SOURCES, *, external=None, workdir="work", launcher: str = "none",
             progress: bool = True) -> dict:
    """Train (or resume) the pre-training run of ``cfg`` (a detector config, ``siim.fold`` = the
    held-out external fold); returns its score with the manifest's path."""
    from ..detect.train import rank, train_fold

    s = cfg.siim
    if s.get("init_from"):
        raise UserError(f"{STAGE}: init_from={s['init_from']!r}: pre-training starts from `weights` (COCO), not "
                        "from another pre-training")
    rows, used, skipped = external_rows(sources, int(s["size"]), external)
    for source, why in skipped.items():
        get_logger().warning("%s: %s skipped (%s)", STAGE, source, why)
    out = outputs.out_dir(workdir, "det", s["variant"])
    score = train_fold(cfg, table=(rows, f"external {'+'.join(used)}", out), launcher=launcher, progress=progress)
    if rank() != 0:
        return {}
    from_scratch = not (s.get("weights") or s.get("backbone_weights"))  # prepare() resolved `weights`
    counts = rows.groupby("source").size().to_dict()
    manifest = outputs.write_manifest(out, kind="det", variant=s["variant"], weights=MODEL_PTH, sources=used,
                                      from_scratch=from_scratch, size=int(s["size"]), images=counts,
                                      held_out_fold=int(s["fold"]), start=s.get("init_weights"),
                                      score={k: v for k, v in score.items() if k.startswith(("opacity", "n_"))})
    return {**score, "sources": used, "skipped": sorted(skipped), "manifest": str(manifest)}


def run(config=None, sources=SOURCES, *, size=None, overrides=None, external=None, workdir=None, gpus=None,
        held_out_fold: int = 0, progress: bool = True) -> dict:
    """The notebook's one call; on several GPUs through torchrun (one process per GPU)."""
    import subprocess

    from ..detect import config as C
    from ..detect.train import gpu_count
    from ..paths import working_dir

    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in (overrides or {}).items()]
    if size is not None:
        sets.append(f"siim.size={size}")
    workdir = Path(workdir) if workdir else working_dir("work")
    cfg = C.load(config, [*sets, f"siim.fold={int(held_out_fold)}"])  # a bad config fails here, before any launch
    gpus = gpu_count() if gpus is None else int(gpus)
    if gpus > 1:
        from ..detect.train import torchrun_command

        argv = ["--config", str(config or C.DEFAULT_VARIANT), "--workdir", str(workdir), "--source", *sources,
                "--held-out-fold", str(int(held_out_fold))]
        argv += ["--external", str(external)] if external else []
        for item in sets:
            argv += ["--set", item]
        subprocess.run(torchrun_command(argv, gpus, command=STAGE), check=True)
        out = outputs.out_dir(workdir, "det", cfg.siim["variant"])
        return {**json.loads((out / SCORES_JSON).read_text()), "manifest": str(out / outputs.MANIFEST)}
    return pretrain(cfg, sources, external=external, workdir=workdir, progress=progress)


def cli(argv: list[str]) -> int:
    from ..detect import config as C
    from ..paths import working_dir

    p = argparse.ArgumentParser(prog=f"python -m siimcovid {STAGE}", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=C.DEFAULT_VARIANT, help=f"detector variant: one of {C.variants()}; the folds "
                   "it starts must train the same variant")
    p.add_argument("--source", nargs="+", default=list(SOURCES), help="external sets to train on (found under "
                   "--external or the inputs; a missing one is skipped)")
    p.add_argument("--external", default=None, help="folder holding the external sets (default: the inputs)")
    p.add_argument("--workdir", default=None, help="default /kaggle/working on Kaggle, else ./work")
    p.add_argument("--held-out-fold", type=int, default=0, help="the external fold scored, not trained on")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch"], help="pytorch under torchrun")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = C.load(a.config, [*a.set, f"siim.fold={a.held_out_fold}"])
    score = pretrain(cfg, a.source, external=a.external, workdir=a.workdir or working_dir("work"),
                     launcher=a.launcher, progress=not a.no_progress)
    if score:
        print(json.dumps(score))
    return 0
