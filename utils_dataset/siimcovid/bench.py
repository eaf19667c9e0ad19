"""Benchmarks: ``python -m siimcovid bench preprocess``.

Writes (or reuses) a synthetic set of full-size DICOMs, ``--per-syntax`` of each transfer
syntax, then in one run measures:

* the naive baseline: pydicom defaults (its own plugin order), full-array ``apply_voi_lut``,
  per-image min-max, resize, PNG, one process;
* the project's path (``siimcovid.preprocess.process_one``: decode, LUT, resize, PNG) in one
  process, per syntax, with the share of the time spent decoding, interleaved with the
  baseline file by file and best of ``--repeats`` so other load on the machine hits both alike;
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
            style_ts = DicomStyle(**{**style.__dict__, "transfer_syntax": ts})
            stored, kwargs = encode_display(disp, style_ts)
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


def _pool_run(files: list[dict], out: Path, size: int, workers: int, reduce_j2k: bool = True,
              repeat: int = 1) -> tuple[float, list[dict]]:
    """Wall seconds of the last pass and its per-image results (earlier passes warm the caches)."""
    from .preprocess import PreprocessConfig, run_pool

    cfg = PreprocessConfig(data=str(out), out=str(out), sizes=[size], workers=workers, reduce_j2k=reduce_j2k,
                           progress=False)
    results: list[dict] = []
    tasks = [{"path": f["path"], "dicom": f["path"], "image_id": f["image_id"], "split": "bench"} for f in files]

    def on_result(task, res):
        if not res["ok"]:
            raise RuntimeError(f"bench: {task['path']} failed: {res['reason']}")
        results.append(dict(res, syntax=task["image_id"][7:]))

    # Warm the worker (imports, first-call costs) on one file, then time the whole set.
    run_pool(tasks[:1], cfg, 1, lambda t, r: None)
    t0 = time.perf_counter()
    run_pool(tasks * repeat, cfg, workers, on_result)
    wall = (time.perf_counter() - t0) / repeat
    return wall, results[-len(tasks):]


def bench_preprocess(out: str | Path, per_syntax: int = 2, size: int = 1024, max_workers: int | None = None,
                     scale: float = 1.0, repeats: int = 2) -> dict:
    """Per syntax: naive and project path timed file by file, interleaved, best of ``repeats``
    (robust to other load on a shared machine); then the pool's wall clock for 1..N workers."""
    import warnings

    import cv2

    from .preprocess import PreprocessConfig, _warm_imports, process_one

    warnings.simplefilter("ignore")
    cv2.setNumThreads(1)
    _warm_imports()
    out = Path(out)
    files = make_bench_set(out / "dicom", per_syntax, scale)
    max_workers = max_workers or os.cpu_count() or 1
    png_dir = out / "naive"
    png_dir.mkdir(parents=True, exist_ok=True)
    cfg = PreprocessConfig(data=str(out), out=str(out / "project"), sizes=[size], progress=False)

    naive = {ts: 0.0 for ts in SYNTAXES}
    ours = {ts: 0.0 for ts in SYNTAXES}
    decode = {ts: 0.0 for ts in SYNTAXES}
    decoders: dict[str, str] = {}
    naive_convert(files[0]["path"], size, png_dir / "warm.png")
    process_one({"path": files[0]["path"], "image_id": "warm", "split": "bench"}, cfg)
    load_before = os.getloadavg()[0]
    for f in files:
        # The files are known-good synthetic ones, so dicomsdl may run in this process here.
        task = {"path": f["path"], "image_id": f["image_id"], "split": "bench"}
        tn, to = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            naive_convert(f["path"], size, png_dir / f"{f['image_id']}.png")
            tn.append(time.perf_counter() - t0)
            res = process_one(task, cfg)
            if not res["ok"]:
                raise RuntimeError(f"bench: {f['path']}: {res['reason']}")
            to.append(res["timings"])
        best = min(to, key=lambda t: t["total"])
        naive[f["syntax"]] += min(tn)
        ours[f["syntax"]] += best["total"]
        decode[f["syntax"]] += best["decode"]
        decoders[f["syntax"]] = res["record"]["decoder"]
    n = per_syntax
    rows = [{"syntax": ts, "naive_img_s": n / naive[ts], "project_img_s": n / ours[ts], "ratio": naive[ts] / ours[ts],
             "decode_share": decode[ts] / ours[ts], "decoder": decoders.get(ts)} for ts in SYNTAXES]
    total_naive, total_ours = sum(naive.values()), sum(ours.values())
    scaling = []
    for k in range(1, max_workers + 1):
        wall, _ = _pool_run(files, out / "project", size, k)
        scaling.append({"workers": k, "img_s": len(files) / wall})
    summary = {
        "size": size, "images": len(files), "per_syntax": n, "image_hw": _hw(files[0]["path"]), "cpus": os.cpu_count(),
        "repeats": repeats, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "per_syntax_rows": rows,
        "mix": {"naive_img_s": len(files) / total_naive, "project_img_s": len(files) / total_ours,
                "ratio": total_naive / total_ours, "decode_share": sum(decode.values()) / total_ours},
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
             f"{'syntax':<14} {'naive img/s':>11} {'project img/s':>13} {'ratio':>6} {'decode share':>12}  decoder"]
    for r in s["per_syntax_rows"]:
        lines.append(f"{r['syntax']:<14} {r['naive_img_s']:>11.2f} {r['project_img_s']:>13.2f} {r['ratio']:>5.1f}x "
                     f"{r['decode_share']:>11.0%}  {r['decoder']}")
    m = s["mix"]
    lines.append(f"{'mix':<14} {m['naive_img_s']:>11.2f} {m['project_img_s']:>13.2f} {m['ratio']:>5.1f}x {m['decode_share']:>11.0%}")
    lines += ["", "scaling (whole set, wall clock incl. process overhead):"]
    lines += [f"  {x['workers']} worker(s): {x['img_s']:.2f} img/s ({x['speedup']:.2f}x)" for x in s["scaling"]]
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
    a = ap.parse_args(argv)
    s = bench_preprocess(a.out, a.per_syntax, a.size, a.workers, a.scale, a.repeats)
    print(format_report(s))
    print(f"\n(saved {Path(a.out) / 'bench.json'})")
    return 0
