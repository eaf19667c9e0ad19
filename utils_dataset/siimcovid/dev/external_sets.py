"""Tiny external sets in each source's published layout (RSNA, VinBigData, NIH, CheXpert), plus a
tiny competition-shaped preprocess output to check duplicates against. For the tests and the demo.

Each set holds what the adapters must handle: a no-finding image, several readers (VinBigData),
an uncertain label and a lateral view (CheXpert), an RGBA PNG (NIH), a file the labels list but
the folder lacks, a file that does not decode, and a copy of a competition image (``like``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .synthetic import render_study_image

ORIG = 96  # px of the hand-made "original" images (outputs are 64 px in the tests)


def chest(seed: int, h: int = ORIG, w: int = ORIG, boxes=()) -> np.ndarray:
    """A chest-like uint8 picture (bright = dense), one per seed."""
    rng = np.random.default_rng(seed)
    return np.rint(render_study_image(rng, h, w, "typical" if boxes else "negative", boxes) * 255).astype(np.uint8)


def write_like(root: str | Path, n: int = 4, size: int = 64, seed: int = 100) -> Path:
    """A competition preprocess output (meta.csv + images/<size>/train/*.png) of ``n`` pictures;
    picture i is ``chest(seed + i)``."""
    import cv2

    root = Path(root)
    rows = []
    for i in range(n):
        image_id = f"comp{i:02d}"
        p = root / "images" / str(size) / "train" / f"{image_id}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), cv2.resize(chest(seed + i), (size, size), interpolation=cv2.INTER_AREA))
        rows.append({"image_id": image_id, "study_id": f"st{i:02d}", "series_id": "se", "split": "train",
                     "dicom": f"train/st{i:02d}/se/{image_id}.dcm", "orig_h": ORIG, "orig_w": ORIG,
                     "keep_aspect": False, "boxes": "[]", f"boxes_{size}": "[]", "study_label": 0, "fold": 0})
    pd.DataFrame(rows).to_csv(root / "meta.csv", index=False)
    return root


def _dicom(path: Path, img: np.ndarray, image_id: str, *, bits: int = 8, monochrome1: bool = False) -> None:
    from .dicom_write import write_dicom

    path.parent.mkdir(parents=True, exist_ok=True)
    top = 2 ** bits - 1
    x = img.astype(np.float64) / 255.0
    stored = np.rint((1.0 - x if monochrome1 else x) * top).astype(np.uint16)
    write_dicom(path, stored, study_id=image_id, series_id=image_id, image_id=image_id, bits_stored=bits,
                photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2")


def _csv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


def write_rsna(src: str | Path, like_seed: int = 100) -> Path:
    """``stage_2_train_labels.csv`` + ``stage_2_detailed_class_info.csv`` + 8-bit DICOMs:
    rsna-box (two boxes), rsna-normal, rsna-notnormal (no box), rsna-dup (competition picture
    ``like_seed``), rsna-missing (no file), rsna-bad (not a DICOM)."""
    src = Path(src)
    d = src / "stage_2_train_images"
    _dicom(d / "rsna-box.dcm", chest(1, boxes=[(10, 20, 40, 60), (55, 20, 85, 60)]), "rsna-box")
    _dicom(d / "rsna-normal.dcm", chest(2), "rsna-normal")
    _dicom(d / "rsna-notnormal.dcm", chest(3), "rsna-notnormal")
    _dicom(d / "rsna-dup.dcm", chest(like_seed), "rsna-dup")
    (d / "rsna-bad.dcm").write_bytes(b"not a dicom at all")
    _csv(src / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target", [
        "rsna-box,10.0,20.0,30.0,40.0,1", "rsna-box,55.0,20.0,30.0,40.0,1", "rsna-normal,,,,,0",
        "rsna-notnormal,,,,,0", "rsna-dup,,,,,0", "rsna-missing,,,,,0", "rsna-bad,,,,,0"])
    _csv(src / "stage_2_detailed_class_info.csv", "patientId,class", [
        "rsna-box,Lung Opacity", "rsna-box,Lung Opacity", "rsna-normal,Normal",
        "rsna-notnormal,No Lung Opacity / Not Normal", "rsna-dup,Normal", "rsna-missing,Normal", "rsna-bad,Normal"])
    return src


def write_vinbigdata(src: str | Path, like_seed: int = 100) -> Path:
    """``train.csv`` (three readers per image) + 12-bit MONOCHROME1 DICOMs: vin-op (R1 and R2 box
    the same opacity, R3 says No finding; R1 also marks Cardiomegaly), vin-none (three times No
    finding), vin-heart (Cardiomegaly only: not opacity), vin-dup (competition picture)."""
    src = Path(src)
    for i, name in enumerate(("vin-op", "vin-none", "vin-heart")):
        _dicom(src / "train" / f"{name}.dicom", chest(10 + i), name, bits=12, monochrome1=True)
    _dicom(src / "train" / "vin-dup.dicom", chest(like_seed + 1), "vin-dup", bits=12, monochrome1=True)
    nf = "No finding,14,{r},,,,"
    _csv(src / "train.csv", "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max", [
        "vin-op,Lung Opacity,7,R1,10.0,20.0,40.0,60.0", "vin-op,Consolidation,4,R2,12.0,22.0,42.0,62.0",
        "vin-op,Cardiomegaly,3,R1,30.0,50.0,70.0,80.0", f"vin-op,{nf.format(r='R3')}",
        *[f"vin-none,{nf.format(r=r)}" for r in ("R1", "R2", "R3")],
        "vin-heart,Cardiomegaly,3,R1,30.0,50.0,70.0,80.0", "vin-heart,Aortic enlargement,0,R2,40.0,20.0,55.0,40.0",
        f"vin-heart,{nf.format(r='R3')}", *[f"vin-dup,{nf.format(r=r)}" for r in ("R1", "R2", "R3")]])
    return src


NIH_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def write_nih(src: str | Path, like_seed: int = 100) -> Path:
    """``Data_Entry_2017.csv`` + ``BBox_List_2017.csv`` + ``images_00N/images/*.png``:
    00000001_000 (Pneumonia|Effusion, one Pneumonia box), 00000002_000 (No Finding), 00000003_000
    (Infiltration, RGBA, box list spells it Infiltrate), 00000004_000 (Cardiomegaly, a box of its own),
    00000005_000 (competition picture), 00000006_000 (listed, no file)."""
    import cv2

    src = Path(src)
    pics = {"00000001_000.png": chest(20, boxes=[(10, 20, 40, 60)]), "00000002_000.png": chest(21),
            "00000004_000.png": chest(23), "00000005_000.png": chest(like_seed + 2)}
    for i, (name, img) in enumerate(pics.items()):
        p = src / f"images_00{1 + i % 2}" / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
    rgba = cv2.cvtColor(chest(22), cv2.COLOR_GRAY2BGRA)
    cv2.imwrite(str(src / "images_001" / "images" / "00000003_000.png"), rgba)
    _csv(src / "Data_Entry_2017.csv", NIH_ENTRY_HEADER, [
        "00000001_000.png,Pneumonia|Effusion,0,1,58,M,PA,2682,2749,0.143,0.143",
        "00000002_000.png,No Finding,0,2,81,F,AP,2500,2048,0.168,0.168",
        "00000003_000.png,Infiltration,0,3,45,M,PA,2048,2500,0.168,0.168",
        "00000004_000.png,Cardiomegaly,1,2,81,F,AP,2500,2048,0.168,0.168",
        "00000005_000.png,No Finding,0,5,30,F,PA,2048,2048,0.139,0.139",
        "00000006_000.png,No Finding,0,6,30,F,PA,2048,2048,0.139,0.139"])
    _csv(src / "BBox_List_2017.csv", NIH_BBOX_HEADER, [
        "00000001_000.png,Pneumonia,10.0,20.0,30.0,40.0,,,", "00000003_000.png,Infiltrate,50.0,20.0,30.0,40.0,,,",
        "00000004_000.png,Cardiomegaly,30.0,50.0,40.0,30.0,,,"])
    return src


CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")


def write_chexpert(src: str | Path, like_seed: int = 100) -> Path:
    """``CheXpert-v1.0-small/train.csv`` + JPEGs: patient00001 study1 frontal (Lung Opacity 1.0) and
    lateral, patient00002 (No Finding 1.0), patient00003 (Consolidation -1.0 uncertain, the rest
    blank), patient00004 (competition picture)."""
    import cv2

    src = Path(src)
    root = src / "CheXpert-v1.0-small" / "train"
    views = {"patient00001/study1/view1_frontal.jpg": chest(30, boxes=[(10, 20, 40, 60)]),
             "patient00001/study1/view2_lateral.jpg": chest(31), "patient00002/study1/view1_frontal.jpg": chest(32),
             "patient00003/study1/view1_frontal.jpg": chest(33),
             "patient00004/study1/view1_frontal.jpg": chest(like_seed + 3)}
    for rel, img in views.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    p = "CheXpert-v1.0-small/train/"
    _csv(src / "CheXpert-v1.0-small" / "train.csv", CHEXPERT_HEADER, [
        f"{p}patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,,,1.0,,,,,,0.0,,,,1.0",
        f"{p}patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,,,,1.0,,,,,,0.0,,,,1.0",
        f"{p}patient00002/study1/view1_frontal.jpg,Male,87,Frontal,PA,1.0,,0.0,,,,0.0,,,0.0,,,,",
        f"{p}patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,,-1.0,,,,,,,",
        f"{p}patient00004/study1/view1_frontal.jpg,Female,50,Frontal,PA,1.0,,,,,,,,,,,,,"])
    return src


WRITERS = {"rsna": write_rsna, "vinbigdata": write_vinbigdata, "nih": write_nih, "chexpert": write_chexpert}


def write_all(root: str | Path, like_seed: int = 100) -> dict[str, Path]:
    """Every source under ``root/<source>/`` plus ``root/like/`` (the competition pictures)."""
    root = Path(root)
    out = {name: fn(root / name, like_seed) for name, fn in WRITERS.items()}
    out["like"] = write_like(root / "like", seed=like_seed)
    (root / "external_sets.json").write_text(json.dumps({k: str(v) for k, v in out.items()}))
    return out


# ------------------------------------------------------------------------- demo-sized sets
# The demo's external sets: many images in the RSNA and CheXpert layouts, drawn like the synthetic
# competition set (same anatomy and opacity renderer), so pre-training on them is related to the
# task as RSNA Pneumonia is to SIIM. RSNA's share of Target 1 images is about 31 %.
RSNA_POSITIVE = 0.31


def _labelled_picture(rng: np.random.Generator, orig: int, positive: bool) -> tuple[np.ndarray, list]:
    from .synthetic import Anatomy, _n_boxes, sample_boxes

    anatomy = Anatomy.sample(rng)
    rel = sample_boxes(rng, "typical", anatomy, _n_boxes(rng, "typical")) if positive else []
    boxes = [(x0 * orig, y0 * orig, x1 * orig, y1 * orig) for x0, y0, x1, y1 in rel]
    img = render_study_image(rng, orig, orig, "typical" if positive else "negative", boxes, anatomy=anatomy)
    return np.rint(img * 255).astype(np.uint8), boxes


def write_rsna_like(src: str | Path, n: int, seed: int = 0, orig: int = 256) -> Path:
    """``n`` 8-bit DICOMs (``orig`` px square, as RSNA's 1024 px ones) with ``stage_2_train_labels.csv``
    and ``stage_2_detailed_class_info.csv`` as published; box-less images are Normal or Not Normal."""
    src = Path(src)
    rng = np.random.default_rng(seed)
    labels, classes = [], []
    for i in range(n):
        pid = f"rsna{seed:02d}-{i:05d}"
        img, boxes = _labelled_picture(rng, orig, rng.random() < RSNA_POSITIVE)
        _dicom(src / "stage_2_train_images" / f"{pid}.dcm", img, pid)
        for x0, y0, x1, y1 in boxes:
            labels.append(f"{pid},{x0:.1f},{y0:.1f},{x1 - x0:.1f},{y1 - y0:.1f},1")
            classes.append(f"{pid},Lung Opacity")
        if not boxes:
            labels.append(f"{pid},,,,,0")
            classes.append(f"{pid},{'Normal' if rng.random() < 0.45 else 'No Lung Opacity / Not Normal'}")
    _csv(src / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target", labels)
    _csv(src / "stage_2_detailed_class_info.csv", "patientId,class", classes)
    return src


def write_chexpert_like(src: str | Path, n: int, seed: int = 0, orig: int = 256) -> Path:
    """``n`` frontal JPEGs (one study per patient) plus one lateral view in ten, and ``train.csv`` as
    published: Lung Opacity 1.0 where the picture has opacities, some of them uncertain (-1.0)."""
    import cv2

    src = Path(src)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i in range(n):
        patient = f"patient{seed:02d}{i:05d}"
        positive = rng.random() < 0.4
        img, _boxes = _labelled_picture(rng, orig, positive)
        views = [("view1_frontal", "Frontal", img)]
        if i % 10 == 9:
            views.append(("view2_lateral", "Lateral", _labelled_picture(rng, orig, positive)[0]))
        opacity = ("-1.0" if rng.random() < 0.15 else "1.0") if positive else ""
        finding = "" if positive else "1.0"
        for view, fl, pic in views:
            rel = f"CheXpert-v1.0-small/train/{patient}/study1/{view}.jpg"
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / rel), pic, [cv2.IMWRITE_JPEG_QUALITY, 90])
            ap = "AP" if fl == "Frontal" else ""
            rows.append(f"{rel},Female,60,{fl},{ap},{finding},,,{opacity},,,,,,,,,,")
    _csv(src / "CheXpert-v1.0-small" / "train.csv", CHEXPERT_HEADER, rows)
    return src


DEMO_WRITERS = {"rsna": write_rsna_like, "chexpert": write_chexpert_like}


def mount_rel(source: str) -> str:
    """Where Kaggle mounts ``source``'s default handle under /kaggle/input (competitions/<slug> or
    datasets/<owner>/<slug>): the stand-in is laid out by the real handle."""
    from ..preprocess.external.cli import adapter
    from ..variants import load

    handle = load("external", source, {}, adapter(source).Config).handle
    return f"datasets/{handle}" if "/" in handle else f"competitions/{handle}"


def write_inputs(root: str | Path, counts: dict[str, int], seed: int = 0, orig: int = 256,
                 fixtures: bool = True) -> dict[str, Path]:
    """Stand-ins for the external sources, in a folder laid out as /kaggle/input (``--inputs`` of
    run-local and rehearse): ``root/<mount_rel(source)>/`` per source of ``counts`` (demo-sized), and
    with ``fixtures`` the hand-made set of every other source (the preprocess-external kernel lists
    all four, and the rehearsal mounts only what is there)."""
    root = Path(root)
    unknown = set(counts) - set(DEMO_WRITERS)
    if unknown:
        raise ValueError(f"no demo writer for {sorted(unknown)}; have {sorted(DEMO_WRITERS)}")
    out = {s: DEMO_WRITERS[s](root / mount_rel(s), int(n), seed, orig) for s, n in counts.items() if n}
    if fixtures:
        out.update({s: fn(root / mount_rel(s)) for s, fn in WRITERS.items() if s not in out})
    (root / "external_inputs.json").write_text(json.dumps({"counts": counts, "seed": seed, "orig": orig,
                                                          "paths": {k: str(v) for k, v in out.items()}}))
    return out


def cli(argv: list[str]) -> int:
    """``python -m siimcovid synth-external --out DIR [--rsna N] [--chexpert N]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m siimcovid synth-external",
                                 description="Synthetic external sets (RSNA, CheXpert layouts) in the /kaggle/input "
                                             "layout, for run-local / rehearse --inputs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rsna", type=int, default=200, help="images in the RSNA Pneumonia layout")
    ap.add_argument("--chexpert", type=int, default=0, help="patients in the CheXpert layout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orig", type=int, default=256, help="px of the written pictures")
    a = ap.parse_args(argv)
    marker = Path(a.out) / "external_inputs.json"
    want = {"counts": {"rsna": a.rsna, "chexpert": a.chexpert}, "seed": a.seed, "orig": a.orig}
    if marker.is_file():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            print(f"synth-external: {a.out} already holds {want}")
            return 0
        from ..errors import UserError

        raise UserError(f"{a.out} holds external sets {have.get('counts')} (seed {have.get('seed')}); "
                        "use another folder or remove it")
    out = write_inputs(a.out, want["counts"], a.seed, a.orig)
    print("synth-external: " + ", ".join(f"{k} -> {v}" for k, v in out.items()))
    return 0
