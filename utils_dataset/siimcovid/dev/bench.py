"""Benchmarks: ``python -m siimcovid bench preprocess``, ``bench study-input`` and ``bench models``
(:mod:`siimcovid.dev.bench_models`).

Writes (or reuses) a synthetic set of full-size DICOMs, ``--per-syntax`` of each transfer
syntax, then in one run measures:

* the naive baseline: pydicom defaults (its own plugin order), full-array ``apply_voi_lut``,
  per-image min-max, resize, PNG, one process;
* the project's path (``siimcovid.preprocess.convert.process_one``: decode, LUT, resize, PNG) in one
  process, per syntax, with the share of the time spent decoding, interleaved with the
  baseline file by file and best of ``--repeats`` so other load on the machine hits both alike;
* the same path with ``--fast-voi`` (stored values resized before the VOI table), timed beside
  it, and how far its PNGs are from the default (bit-exact) ones in grey levels;
* the project's path with 1..N workers on the whole set (scaling).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SYNTAXES = ("explicit", "rle", "jpeg_lossless", "jpegls", "j2k", "j2k_lossy")


def make_bench_set(out: str | Path, per_syntax: int = 2, scale: float = 1.0, seed: int = 0) -> list[dict]:
    """Full-size DICOMs, the same few radiographs written in every transfer syntax (so the
    syntaxes compare on equal content); styles vary photometric, bits, window / VOI LUT."""
    from dataclasses import replace

    from .synthetic import DicomStyle, encode_display, render_study_image, write_dicom

    out = Path(out)
    index_file = out / "files.json"
    if index_file.is_file():
        files = json.loads(index_file.read_text())
        if len(files) == per_syntax * len(SYNTAXES) and all(Path(f["path"]).is_file() for f in files) \
                and all(f.get("scale") == scale for f in files):
            return files
    rng = np.random.default_rng(seed)
    h, w = max(32, int(round(2544 * scale))), max(32, int(round(3028 * scale)))
    styles = [
        DicomStyle(photometric="MONOCHROME2", bits_stored=12, voi="window", stored_range=(40, 4000)),
        DicomStyle(photometric="MONOCHROME1", bits_stored=16, voi="none", stored_range=(900, 52000)),
        DicomStyle(photometric="MONOCHROME2", bits_stored=14, voi="lut", stored_range=(200, 15000)),
        DicomStyle(photometric="MONOCHROME1", bits_stored=12, voi="window", stored_range=(0, 4095), rescale=(1.0, -1024.0)),
    ]
    files = []
    for i in range(per_syntax):
        disp = render_study_image(rng, h, w, "typical", [(0.1 * w, 0.5 * h, 0.4 * w, 0.85 * h)])
        style = styles[i % len(styles)]
        for ts in SYNTAXES:
            stored, kwargs = encode_display(disp, replace(style, transfer_syntax=ts))
            image_id = f"bench{i:02d}{ts}"
            path = out / ts / f"{image_id}.dcm"
            write_dicom(path, stored, study_id=f"study{i:02d}", series_id=f"series{i:02d}", image_id=image_id, **kwargs)
            files.append({"path": str(path), "image_id": image_id, "syntax": ts, "scale": scale})
    index_file.write_text(json.dumps(files, indent=1))
    return files


def naive_convert(path: str | Path, size: int, out_png: str | Path) -> None:
    """The usual notebook recipe: pydicom defaults + full-array VOI + per-image min-max."""
    import cv2
    import pydicom
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(path)
    data = apply_voi_lut(ds.pixel_array, ds)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        data = np.amax(data) - data
    data = data - np.min(data)
    data = data / max(np.max(data), 1e-9)
    img = (data * 255).astype(np.uint8)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out_png), img)


def _pool_wall(files: list[dict], out: Path, size: int, workers: int, stats: dict | None = None) -> float:
    """Wall seconds for ``run_pool`` to convert ``files`` with ``workers`` processes, worker
    start-up included (a one-file warm-up run first loads the forkserver's imports). ``stats``
    (if given) gets the seconds spent inside ``process_one`` summed over images ("worker_s"),
    the pickled bytes of every task and result that crossed a pipe ("ipc_bytes") and the
    steady-state seconds per image ("steady_s": first to last result over N - 1; start-up
    excluded) with the time inside ``process_one`` over the same images ("steady_worker_s")."""
    import pickle

    from ..preprocess.convert import PreprocessConfig, run_pool

    cfg = PreprocessConfig(data=str(out), out=str(out), sizes=[size], workers=workers, progress=False)
    tasks = [{"path": f["path"], "dicom": f["path"], "image_id": f["image_id"], "split": "bench"} for f in files]
    acc: dict = {"worker_s": 0.0, "ipc_bytes": 0, "done": []}

    def on_result(task, res):
        if not res["ok"]:
            raise RuntimeError(f"bench: {task['path']} failed: {res['stage']}: {res['reason']}")
        acc["worker_s"] += res["timings"]["total"]
        acc["ipc_bytes"] += len(pickle.dumps(task)) + len(pickle.dumps(res))
        acc["done"].append((time.perf_counter(), res["timings"]["total"]))

    run_pool(tasks[:1], cfg, 1, on_result)
    acc.update(worker_s=0.0, ipc_bytes=0, done=[])
    t0 = time.perf_counter()
    run_pool(tasks, cfg, workers, on_result)
    wall = time.perf_counter() - t0
    if stats is not None:
        done = acc.pop("done")
        n = len(done) - 1
        stats.update(acc, steady_s=(done[-1][0] - done[0][0]) / n if n > 0 else float("nan"),
                     steady_worker_s=sum(t for _, t in done[1:]) / n if n > 0 else float("nan"))
    return wall


def bench_preprocess(out: str | Path, per_syntax: int = 2, size: int = 1024, max_workers: int | None = None,
                     scale: float = 1.0, repeats: int = 2, syntaxes: tuple[str, ...] = SYNTAXES) -> dict:
    """Per syntax: naive and project path timed file by file, interleaved, best of ``repeats``
    (robust to other load on a shared machine); then the pool's wall clock for 1..N workers.
    ``syntaxes``: time only these (the set on disk always holds all of :data:`SYNTAXES`)."""
    import warnings

    import cv2

    from ..layout import image_path
    from ..preprocess.convert import PreprocessConfig, _warm_imports, process_one

    warnings.simplefilter("ignore")
    cv2.setNumThreads(1)
    _warm_imports()
    out = Path(out)
    unknown = set(syntaxes) - set(SYNTAXES)
    if unknown:
        raise ValueError(f"bench: unknown syntax(es) {sorted(unknown)}; valid: {', '.join(SYNTAXES)}")
    files = [f for f in make_bench_set(out / "dicom", per_syntax, scale) if f["syntax"] in syntaxes]
    max_workers = max_workers or os.cpu_count() or 1
    png_dir = out / "naive"
    png_dir.mkdir(parents=True, exist_ok=True)
    cfg = PreprocessConfig(data=str(out), out=str(out / "project"), sizes=[size], progress=False)
    # the opt-in "fast VOI" route (stored values resized before the VOI table), timed beside it
    fast_cfg = PreprocessConfig(data=str(out), out=str(out / "project_fast"), sizes=[size], progress=False,
                                exact=False)

    naive = {ts: 0.0 for ts in syntaxes}
    ours = {ts: 0.0 for ts in syntaxes}
    fast = {ts: 0.0 for ts in syntaxes}
    decode = {ts: 0.0 for ts in syntaxes}
    fast_diff: dict[str, list[float]] = {ts: [] for ts in syntaxes}
    fast_max = {ts: 0 for ts in syntaxes}
    decoders: dict[str, str] = {}
    naive_convert(files[0]["path"], size, png_dir / "warm.png")
    for c in (cfg, fast_cfg):
        process_one({"path": files[0]["path"], "image_id": "warm", "split": "bench"}, c)
    load_before = os.getloadavg()[0]
    for f in files:
        # The files are known-good synthetic ones, so dicomsdl may run in this process here.
        task = {"path": f["path"], "image_id": f["image_id"], "split": "bench"}
        tn, to, tf = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            naive_convert(f["path"], size, png_dir / f"{f['image_id']}.png")
            tn.append(time.perf_counter() - t0)
            for c, runs in ((cfg, to), (fast_cfg, tf)):
                res = process_one(task, c)
                if not res["ok"]:
                    raise RuntimeError(f"bench: {f['path']}: {res['stage']}: {res['reason']}")
                runs.append(res)
        best = min((r["timings"] for r in to), key=lambda t: t["total"])
        naive[f["syntax"]] += min(tn)
        ours[f["syntax"]] += best["total"]
        fast[f["syntax"]] += min(r["timings"]["total"] for r in tf)
        decode[f["syntax"]] += best["decode"]
        decoders[f["syntax"]] = to[-1]["record"]["decoder"]
        a, b = (cv2.imread(str(image_path(c.out, size, "bench", f["image_id"])), cv2.IMREAD_GRAYSCALE).astype(int)
                for c in (cfg, fast_cfg))
        fast_diff[f["syntax"]].append(float(np.abs(a - b).mean()))
        fast_max[f["syntax"]] = max(fast_max[f["syntax"]], int(np.abs(a - b).max()))
    n = per_syntax
    rows = [{"syntax": ts, "naive_img_s": n / naive[ts], "project_img_s": n / ours[ts], "ratio": naive[ts] / ours[ts],
             "decode_share": decode[ts] / ours[ts], "decoder": decoders.get(ts),
             "fast_img_s": n / fast[ts], "fast_ratio": naive[ts] / fast[ts],
             "fast_mean_diff": float(np.mean(fast_diff[ts])), "fast_max_diff": fast_max[ts]} for ts in syntaxes]
    total_naive, total_ours = sum(naive.values()), sum(ours.values())
    scaling = []
    for k in range(1, max_workers + 1):
        st: dict = {}
        wall = _pool_wall(files, out / "project", size, k, st)
        # worker_ms: time inside process_one per image (grows with k when the cores contend for
        # memory bandwidth / cache); busy: share of k x wall spent there (the rest: start-up,
        # the parent's scheduling, IPC, idle tail)
        scaling.append({"workers": k, "img_s": len(files) / wall, "worker_ms": 1000 * st["worker_s"] / len(files),
                        "busy": st["worker_s"] / (k * wall), "ipc_bytes_per_image": st["ipc_bytes"] / len(files)})
    summary = {
        "size": size, "images": len(files), "per_syntax": n, "image_hw": _hw(files[0]["path"]), "cpus": os.cpu_count(),
        "repeats": repeats, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "per_syntax_rows": rows,
        "mix": {"naive_img_s": len(files) / total_naive, "project_img_s": len(files) / total_ours,
                "ratio": total_naive / total_ours, "decode_share": sum(decode.values()) / total_ours,
                "fast_img_s": len(files) / sum(fast.values()), "fast_ratio": total_naive / sum(fast.values())},
        "scaling": [dict(x, speedup=x["img_s"] / scaling[0]["img_s"]) for x in scaling],
    }
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    return summary


def _hw(path: str) -> list[int]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [int(ds.Rows), int(ds.Columns)]


def format_report(s: dict) -> str:
    lines = [f"bench preprocess: {s['images']} images ({s['per_syntax']} per syntax, {s['image_hw'][0]} x "
             f"{s['image_hw'][1]}), output {s['size']} px PNG, {s['cpus']} CPU(s), best of {s['repeats']}, "
             f"load average {s['load_avg_1min'][0]} -> {s['load_avg_1min'][1]}", "",
             f"{'syntax':<14} {'naive img/s':>11} {'project img/s':>13} {'ratio':>6} {'decode share':>12}  "
             f"{'fast-voi img/s':>14} {'ratio':>6} {'|diff| mean/max':>15}  decoder"]
    for r in s["per_syntax_rows"]:
        lines.append(f"{r['syntax']:<14} {r['naive_img_s']:>11.2f} {r['project_img_s']:>13.2f} {r['ratio']:>5.1f}x "
                     f"{r['decode_share']:>11.0%}  {r['fast_img_s']:>14.2f} {r['fast_ratio']:>5.1f}x "
                     f"{r['fast_mean_diff']:>10.2f}/{r['fast_max_diff']:<4d}  {r['decoder']}")
    m = s["mix"]
    lines.append(f"{'mix':<14} {m['naive_img_s']:>11.2f} {m['project_img_s']:>13.2f} {m['ratio']:>5.1f}x "
                 f"{m['decode_share']:>11.0%}  {m['fast_img_s']:>14.2f} {m['fast_ratio']:>5.1f}x")
    lines.append("(project = default, bit-exact with pydicom's full-array route; fast-voi = `preprocess --fast-voi`,"
                 " |diff| in grey levels against the default output)")
    lines += ["", "scaling (whole set, wall clock incl. process overhead):"]
    lines += [f"  {x['workers']} worker(s): {x['img_s']:.2f} img/s ({x['speedup']:.2f}x); per image inside the worker "
              f"{x['worker_ms']:.0f} ms, workers busy {x['busy']:.0%} of the wall clock, "
              f"{x['ipc_bytes_per_image']:.0f} bytes through the pipes" for x in s["scaling"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- preprocess profile
PROFILE_STEPS = ("read", "decode", "voi", "lut", "resize", "encode", "write")
# PNG settings compared by the profile: (label, cv2.imencode parameters by name)
PNG_SETTINGS = (
    ("opencv default (level 1, rle)", {}),
    ("level 0 (stored)", {"IMWRITE_PNG_COMPRESSION": 0}),
    ("level 1", {"IMWRITE_PNG_COMPRESSION": 1}),
    ("level 3", {"IMWRITE_PNG_COMPRESSION": 3}),
    ("level 6", {"IMWRITE_PNG_COMPRESSION": 6}),
    ("level 9", {"IMWRITE_PNG_COMPRESSION": 9}),
    ("huffman only (project default)", {"IMWRITE_PNG_STRATEGY": "IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY"}),
    ("filter sub + huffman", {"IMWRITE_PNG_FILTER": "IMWRITE_PNG_FILTER_SUB",
                              "IMWRITE_PNG_STRATEGY": "IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY"}),
    ("filter up + rle", {"IMWRITE_PNG_FILTER": "IMWRITE_PNG_FILTER_UP",
                         "IMWRITE_PNG_STRATEGY": "IMWRITE_PNG_STRATEGY_RLE"}),
    ("filter none, level 0", {"IMWRITE_PNG_FILTER": "IMWRITE_PNG_FILTER_NONE", "IMWRITE_PNG_COMPRESSION": 0}),
)


def _png_params(named: dict) -> list[int]:
    import cv2

    out: list[int] = []
    for k, v in named.items():
        out += [getattr(cv2, k), getattr(cv2, v) if isinstance(v, str) else int(v)]
    return out


def profile_preprocess(out: str | Path, sizes: tuple[int, ...] = (1024, 512), per_syntax: int = 3,
                       repeats: int = 3, syntaxes: tuple[str, ...] = ("explicit", "rle"), scale: float = 1.0) -> dict:
    """Where one image's time goes on the default (exact) route, per syntax and output size:
    ``process_one`` in this process, its step timings (median over ``repeats`` per file, mean
    over files) beside the naive route's total (median); then one worker through ``run_pool``:
    wall clock per image minus the time inside ``process_one`` = start-up share, scheduling and
    IPC, with the pickled bytes of task + result that crossed the pipe; then PNG settings:
    encode time and file size on the default route's images."""
    import statistics as stats
    import warnings

    import cv2

    from ..preprocess import dicom
    from ..preprocess.convert import PreprocessConfig, _warm_imports, process_one

    warnings.simplefilter("ignore")
    cv2.setNumThreads(1)
    _warm_imports()
    out = Path(out)
    files = [f for f in make_bench_set(out / "dicom", per_syntax, scale) if f["syntax"] in syntaxes]
    load_before = os.getloadavg()[0]
    rows, png = [], []
    for size in sizes:
        cfg = PreprocessConfig(data=str(out), out=str(out / "profile"), sizes=[size], progress=False)
        naive_convert(files[0]["path"], size, out / "profile_naive.png")
        process_one({"path": files[0]["path"], "image_id": "warm", "split": "bench"}, cfg)
        for ts in syntaxes:
            group = [f for f in files if f["syntax"] == ts]
            steps = {k: [] for k in (*PROFILE_STEPS, "total")}
            naive_ms, decoder = [], ""
            for f in group:
                task = {"path": f["path"], "image_id": f["image_id"], "split": "bench"}
                per = {k: [] for k in steps}
                tn = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    naive_convert(f["path"], size, out / "profile_naive.png")
                    tn.append(time.perf_counter() - t0)
                    res = process_one(task, cfg)
                    if not res["ok"]:
                        raise RuntimeError(f"profile: {f['path']}: {res['stage']}: {res['reason']}")
                    t = res["timings"]
                    parts = {"read": t["read"], "decode": t["decode"], "voi": t["voi"], "lut": t["lut"],
                             "resize": t["resize"] - t["lut"], "encode": t["encode"], "write": t["write"] - t["encode"],
                             "total": t["total"]}
                    for k, v in parts.items():
                        per[k].append(v)
                    decoder = res["record"]["decoder"]
                for k in steps:
                    steps[k].append(stats.median(per[k]))
                naive_ms.append(stats.median(tn))
            wall_st: dict = {}
            group_x = group * (repeats + 1)
            _pool_wall(group_x, out / "profile", size, 1, wall_st)
            ms = {k: 1000 * float(np.mean(v)) for k, v in steps.items()}
            rest = ms["total"] - sum(ms[k] for k in PROFILE_STEPS)
            rows.append({"size": size, "syntax": ts, "decoder": decoder, "ms": ms, "other_ms": rest,
                         "naive_ms": 1000 * float(np.mean(naive_ms)), "pool_ms": 1000 * wall_st["steady_s"],
                         "pool_overhead_ms": 1000 * (wall_st["steady_s"] - wall_st["steady_worker_s"]),
                         "ipc_bytes": wall_st["ipc_bytes"] / len(group_x)})
        imgs = [dicom.convert(f["path"], [size]).images[size] for f in files]
        for label, named in PNG_SETTINGS:
            params = _png_params(named)
            times, kb = [], []
            for img in imgs:
                best = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    ok, buf = cv2.imencode(".png", img, params)
                    best.append(time.perf_counter() - t0)
                times.append(stats.median(best))
                kb.append(buf.size / 1024)
            png.append({"size": size, "setting": label, "ms": 1000 * float(np.mean(times)), "kb": float(np.mean(kb))})
    summary = {"sizes": list(sizes), "syntaxes": list(syntaxes), "per_syntax": per_syntax, "repeats": repeats,
               "image_hw": _hw(files[0]["path"]), "cpus": os.cpu_count(),
               "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "rows": rows, "png": png}
    (out / "profile.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_profile(s: dict) -> str:
    lines = [f"bench preprocess-profile: default (exact) route, {s['per_syntax']} file(s) per syntax "
             f"({s['image_hw'][0]} x {s['image_hw'][1]}), one process, median of {s['repeats']} per file, "
             f"{s['cpus']} CPU(s), load average {s['load_avg_1min'][0]} -> {s['load_avg_1min'][1]}", "",
             "ms per image:",
             f"{'size':>5} {'syntax':<9} " + " ".join(f"{k:>7}" for k in PROFILE_STEPS)
             + f" {'other':>6} {'total':>7} | {'naive':>7} {'ratio':>6} | {'1 worker':>8} {'pool+IPC':>8} {'pipe B':>7}"]
    for r in s["rows"]:
        ms = r["ms"]
        lines.append(f"{r['size']:>5} {r['syntax']:<9} " + " ".join(f"{ms[k]:>7.1f}" for k in PROFILE_STEPS)
                     + f" {r['other_ms']:>6.1f} {ms['total']:>7.1f} | {r['naive_ms']:>7.1f} "
                       f"{r['naive_ms'] / ms['total']:>5.2f}x | {r['pool_ms']:>8.1f} {r['pool_overhead_ms']:>8.1f} "
                       f"{r['ipc_bytes']:>7.0f}")
    lines += ["(read: header + pixel bytes; decode: RLE decoding / in-place view; voi: building the table; lut: "
              "applying it to every pixel; encode: PNG; write: file + rename; 1 worker: wall clock per image through "
              "run_pool, start-up excluded (first to last result); pool+IPC: that minus the time inside process_one; "
              "pipe B: pickled task + result per image)",
              "", "PNG settings on the default route's images (encode ms / kB per image):"]
    for size in s["sizes"]:
        lines.append(f"  {size} px: " + "; ".join(f"{p['setting']} {p['ms']:.1f} ms {p['kb']:.0f} kB"
                                               for p in s["png"] if p["size"] == size))
    return "\n".join(lines)


# --------------------------------------------------------------------------- bench study-input
# Throughput the EfficientNetV2-L 512 px config would consume: ASSUMPTIONS, not measurements.
# TPU: Tan & Le 2021 (EfficientNetV2, Table 7) report EffNetV2-L trained on ImageNet-1k (350 epochs,
# progressive sizes up to ~384 px) in ~24 h on 32 TPUv3 cores = 16 chips: 1.28e6 * 350 / 86400 s
# ~ 5200 img/s, ~325 img/s per v3 chip; x (384/512)^2 for 512 px ~ 180, x 197/123 (v5e vs v3 bf16
# peak TFLOPS) ~ 290 img/s per v5e chip; we assume ~240 per chip (hub layer + aux decoder + Keras fit
# are less tuned) -> ~1900 img/s for v5e-8.
# GPU: the same paper gives ~98 ms per batch of 16 at 480 px for EffNetV2-L inference on a V100
# (~160 img/s); training ~3x inference and x (480/512)^2 -> ~48 img/s per V100; a T4 trains
# convnets at roughly 1/4 of a V100 (65 vs 125 fp16 TFLOPS, 320 vs 900 GB/s) -> ~12 img/s, ~24 for 2.
ASSUMED_DEMAND = {
    "tpu_v5e_8": {"img_s": 1900.0, "host_vcpus": None,
                  "basis": "EffNetV2 paper: ~5200 img/s on 16 TPUv3 chips (ImageNet, <=384 px) -> 512 px, "
                           "x1.6 v5e/v3 peak, x~0.8 for our model; 8 chips"},
    "2xT4": {"img_s": 24.0, "host_vcpus": 4,
             "basis": "EffNetV2 paper: 98 ms / 16 images at 480 px on V100 (inference) -> training x3, 512 px, "
                      "T4 ~ V100/4; 2 GPUs; Kaggle GPU kernels have 4 vCPUs"},
}
STUDY_INPUT_MODES = {
    # name -> config overrides; "aug" keeps the config's flips / shift-scale-rotate / brightness-contrast
    "no_aug": dict(hflip=False, shift=0.0, scale=0.0, rotate=0.0, brightness=0.0, contrast=0.0, randaug_n=0),
    "aug": dict(randaug_n=0),
    "aug+randaug": {},
}


def make_study_input_set(out: str | Path, size: int = 512, images: int = 64, scale: float = 0.25,
                         seed: int = 0) -> Path:
    """A synthetic preprocess output with PNGs and TFRecord shards at ``size`` (reused when present
    and made with the same size, image count, scale and seed; else rebuilt from scratch)."""
    import shutil
    import warnings

    from ..layout import META_CSV, available_sizes, tfrecord_dir

    from ..preprocess import convert as preprocess
    from . import synthetic

    out = Path(out)
    pre = out / "pre"
    # The cached set is reused only when it was made with the same settings (a set of another
    # seed or size would silently change the benchmark): the key is written last, once complete.
    key = {"size": int(size), "images": int(images), "scale": float(scale), "seed": int(seed)}
    key_file = out / "study_input_set.json"
    try:
        cached = json.loads(key_file.read_text())
    except (OSError, ValueError):
        cached = None
    if cached == key and (pre / META_CSV).is_file() and list(tfrecord_dir(pre, size).glob("*.tfrec")) \
            and size in available_sizes(pre):
        return pre
    for stale in (key_file, out / "data", pre):  # another set's files: never mixed into this one
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if synthetic.cli(["--out", str(out / "data"), "--studies", str(images), "--seed", str(seed),
                          "--scale", str(scale), "--no-progress"]) != 0:
            raise RuntimeError(f"bench study-input: synth into {out / 'data'} failed")
        rc = preprocess.cli(["--data", str(out / "data"), "--out", str(pre), "--size", str(size), "--tfrecords",
                             "--k", "2", "--no-progress"])
    if rc not in (0, 1):  # 1 = some images failed, the rest is usable
        raise RuntimeError(f"bench study-input: preprocess into {pre} failed (exit {rc})")
    key_file.write_text(json.dumps(key))
    return pre


def _time_batches(ds, warm: int, n: int) -> float:
    """Seconds for ``n`` batches after ``warm`` (graph build, first reads, autotune ramp-up)."""
    it = iter(ds)
    for _ in range(warm):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return time.perf_counter() - t0


def bench_study_input(out: str | Path, pre: str | Path | None = None, size: int = 512, images: int = 64,
                      pipeline_config: str = "effv2l_hub_512", model_config: str = "tiny_cpu",
                      batch_size: int = 16, batches: int = 8, steps: int = 3, hub: str | None = None,
                      scale: float = 0.25) -> dict:
    """images/s of the study tf.data training pipeline (PNG vs TFRecord, augmentation off / on /
    with RandAugment, augmentation settings of ``pipeline_config``) and of one training step of
    ``model_config``'s model at ``size`` on this machine, with their ratio; plus the assumed demand
    of an EfficientNetV2-L 512 px run on a TPU v5e-8 / 2 x T4 and the host cores it would need."""
    from dataclasses import replace

    import siimcovid  # noqa: F401  (TF env before TensorFlow)
    import tensorflow as tf

    from ..classify.data import load_meta, make_train_dataset, onehot
    from ..study.config import load_config
    from ..study.task import STUDY

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pre = Path(pre) if pre else make_study_input_set(out, size, images, scale)
    load_before = os.getloadavg()[0]
    metas = {fmt: load_meta(pre, size, "train", input_format=fmt) for fmt in ("png", "tfrecord")}
    n_img = len(metas["png"])
    base = load_config(pipeline_config, sets=[f"image_size={size}", f"batch_size={batch_size}"])
    pipeline = []
    for fmt, meta in metas.items():
        for mode, over in STUDY_INPUT_MODES.items():
            cfg = replace(base, input_format=fmt, **over)
            ds = make_train_dataset(meta, onehot(meta["study_label"].to_numpy(), STUDY.n_outputs), cfg, size,
                                    training=True)
            sec = _time_batches(ds, warm=2, n=batches)
            pipeline.append({"format": fmt, "augment": mode, "img_s": batches * batch_size / sec})

    # one training step of the model, fed from memory (input cost excluded)
    from ..classify.backbones import build_model, export_tiny_savedmodel
    from ..classify.train import compile_model

    mcfg = load_config(model_config, sets=[f"image_size={size}", f"batch_size={batch_size}"])
    if mcfg.model == "hub":
        handle = hub or mcfg.hub_handle
        if not (Path(handle) / "saved_model.pb").is_file() and not handle.startswith(("http://", "https://")):
            handle = str(export_tiny_savedmodel(out / "tiny_hub", width=16))
        mcfg = replace(mcfg, hub_handle=handle)
    tf.keras.utils.set_random_seed(0)
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("float32" if mcfg.mixed_precision in ("off", "auto") else mcfg.mixed_precision)
    model = build_model(mcfg, STUDY.n_outputs, STUDY.activation)
    compile_model(model, mcfg, 100, STUDY)
    targets = onehot(metas["png"]["study_label"].to_numpy(), STUDY.n_outputs)
    x, y = next(iter(make_train_dataset(metas["png"], targets, replace(mcfg, input_format="png"), size, training=True)))
    model.train_on_batch(x, y)  # build + trace
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    step_s = (time.perf_counter() - t0) / steps
    model_img_s = batch_size / step_s

    cpus = os.cpu_count() or 1
    for r in pipeline:
        r["ratio_to_model"] = r["img_s"] / model_img_s
    worst = {fmt: min(r["img_s"] for r in pipeline if r["format"] == fmt and r["augment"] == "aug+randaug")
             for fmt in metas}
    demand = {}
    for name, a in ASSUMED_DEMAND.items():
        per_core = {fmt: v / cpus for fmt, v in worst.items()}
        demand[name] = {**a, "cores_needed": {fmt: a["img_s"] / pc for fmt, pc in per_core.items()}}
    summary = {
        "size": size, "images": n_img, "pre": str(pre), "batch_size": batch_size, "batches": batches,
        "cpus": cpus, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "pipeline_config": pipeline_config, "randaug": [base.randaug_n, base.randaug_m], "pipeline": pipeline,
        "model": {"config": model_config, "model": mcfg.model, "handle": mcfg.hub_handle if mcfg.model == "hub"
                  else mcfg.sm_backbone, "params": int(model.count_params()), "steps": steps,
                  "step_s": step_s, "img_s": model_img_s},
        "assumed_demand_effv2l_hub_512": demand,
    }
    (out / "bench_study_input.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_study_input(s: dict) -> str:
    m = s["model"]
    lines = [f"bench study-input: {s['images']} train images at {s['size']} px ({s['pre']}), batch {s['batch_size']}, "
             f"{s['batches']} timed batches, {s['cpus']} CPU(s), load average {s['load_avg_1min'][0]} -> "
             f"{s['load_avg_1min'][1]}",
             f"augmentation of {s['pipeline_config']}; RandAugment n={s['randaug'][0]} m={s['randaug'][1]}", "",
             f"{'input':<9} {'augment':<12} {'img/s':>8} {'x model step':>12}"]
    for r in s["pipeline"]:
        lines.append(f"{r['format']:<9} {r['augment']:<12} {r['img_s']:>8.1f} {r['ratio_to_model']:>11.2f}x")
    lines += ["", f"model step ({m['config']}: {m['model']} {Path(str(m['handle'])).name}, {m['params']:,} params, "
                  f"from memory): {m['step_s']:.3f} s/step = {m['img_s']:.1f} img/s on this machine",
              "  (ratio > 1: the pipeline outruns this model here; both share the same cores when training)", "",
              "effv2l_hub_512 demand -- ASSUMPTION, not a measurement (basis in bench.py ASSUMED_DEMAND):"]
    for name, d in s["assumed_demand_effv2l_hub_512"].items():
        cores = ", ".join(f"{fmt} {c:.1f}" for fmt, c in d["cores_needed"].items())
        host = f"; host has {d['host_vcpus']} vCPUs" if d["host_vcpus"] else ""
        lines.append(f"  {name}: ~{d['img_s']:.0f} img/s -> host cores needed at this machine's per-core "
                     f"aug+randaug rate: {cores}{host}")
        lines.append(f"    basis: {d['basis']}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m siimcovid bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("preprocess", help="DICOM -> PNG: project path vs naive pydicom, per transfer syntax")
    p.add_argument("--out", default="work/bench_preprocess", help="folder for the synthetic DICOMs and outputs (reused)")
    p.add_argument("--per-syntax", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=None, help="largest worker count for the scaling table (default: cores)")
    p.add_argument("--scale", type=float, default=1.0, help="image size relative to the real median 2544 x 3028")
    p.add_argument("--repeats", type=int, default=2, help="time each file this often, keep the best")
    p.add_argument("--syntax", action="append", dest="syntaxes", choices=SYNTAXES,
                   help="time only this transfer syntax (repeat for several; default all)")
    r = sub.add_parser("preprocess-profile", help="per-step time of the default route on uncompressed / RLE files")
    r.add_argument("--out", default="work/bench_preprocess", help="folder of the synthetic DICOMs (shared with preprocess)")
    r.add_argument("--size", type=int, action="append", dest="sizes", help="output size (repeat; default 1024 and 512)")
    r.add_argument("--per-syntax", type=int, default=3)
    r.add_argument("--repeats", type=int, default=3, help="runs per file (median taken)")
    r.add_argument("--syntax", action="append", dest="syntaxes", choices=SYNTAXES, help="default: explicit and rle")
    r.add_argument("--scale", type=float, default=1.0)
    q = sub.add_parser("study-input", help="study tf.data pipeline (PNG / TFRecord, augmentation) vs a training step")
    q.add_argument("--out", default="work/bench_study_input", help="folder for the synthetic set and bench_study_input.json")
    q.add_argument("--pre", default=None, help="an existing preprocess output with PNGs and --tfrecords at --size")
    q.add_argument("--size", type=int, default=512)
    q.add_argument("--images", type=int, default=64, help="synthetic studies to generate when --pre is not given")
    q.add_argument("--scale", type=float, default=0.25, help="synthetic DICOM size relative to the real data")
    q.add_argument("--pipeline-config", default="effv2l_hub_512", help="study config whose augmentation is timed")
    q.add_argument("--config", default="tiny_cpu", help="study config whose model step is timed")
    q.add_argument("--hub", default=None, help="hub SavedModel folder for a hub config (default: a tiny one)")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--batches", type=int, default=8, help="timed pipeline batches per setting")
    q.add_argument("--steps", type=int, default=3, help="timed training steps")
    from . import bench_models

    bench_models.add_parser(sub)
    a = ap.parse_args(argv)
    if a.what == "models":
        return bench_models.run_cli(a)
    if a.what == "study-input":
        s = bench_study_input(a.out, a.pre, a.size, a.images, a.pipeline_config, a.config, a.batch_size, a.batches,
                              a.steps, a.hub, a.scale)
        print(format_study_input(s))
        print(f"\n(saved {Path(a.out) / 'bench_study_input.json'})")
        return 0
    if a.what == "preprocess-profile":
        s = profile_preprocess(a.out, tuple(a.sizes or (1024, 512)), a.per_syntax, a.repeats,
                               tuple(a.syntaxes or ("explicit", "rle")), a.scale)
        print(format_profile(s))
        print(f"\n(saved {Path(a.out) / 'profile.json'})")
        return 0
    s = bench_preprocess(a.out, a.per_syntax, a.size, a.workers, a.scale, a.repeats, tuple(a.syntaxes or SYNTAXES))
    print(format_report(s))
    print(f"\n(saved {Path(a.out) / 'bench.json'})")
    return 0
