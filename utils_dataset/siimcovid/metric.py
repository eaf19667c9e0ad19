"""The competition metric: mean of six PASCAL VOC 2010 APs at IoU > 0.5.

Classes: negative, typical, indeterminate, atypical (study rows, whose ground truth is the
"box" 0 0 1 1 of the study's class) and opacity, none (image rows; an image without opacity
has the ground truth ``none`` 0 0 1 1). Score = mean of the six APs = 2/3 study mAP + 1/3
image mAP. Kaggle's own code is not public; this follows the competition's evaluation page and the
PASCAL VOC devkit:

* Detections of a class are pooled over all scored rows and sorted by confidence with a
  STABLE sort, so ties keep submission order (row order, then order inside the row).
* In that order each detection is a true positive if some not-yet-matched ground-truth box
  of its class in the same row has IoU > 0.5 (strictly: IoU exactly 0.5 is a miss); it takes
  the unmatched box of best IoU (greedy). Otherwise it is a false positive (a duplicate of an
  already matched box included).
* Recall denominator = number of ground-truth boxes of the class in the scored rows.
* AP = all-point interpolated area under the precision-recall curve after making precision
  monotone (VOC 2010), not the 11-point VOC 2007 rule.
* Tie rule for the curve: by default precision/recall are taken only at the last detection
  of each run of equal confidences (one point per distinct threshold, as sklearn does), so
  the AP of tied detections does not depend on the order of the rows: the sample
  submission (every row ``negative 1`` / ``none 1``) scores exactly the class priors,
  (n_negative/n_studies + n_none/n_images)/6. ``group_ties=False`` gives the VOC devkit's
  one point per detection, where tied rows listed true-positives-first score higher.
  Matching (which box a tied detection takes) follows the stable order either way.
* A class without ground truth in the scored rows has no AP (None in JSON, NaN in Python):
  it is left out of every mean and listed in ``skipped_classes`` (so the score is a mean of
  five, say; ``score`` prints a line saying so). Kaggle's test set holds every class.
* A submission is scored only when it passes the validator's row checks
  (:func:`submission.check_rows`; ``score`` runs the whole ``validate-submission`` first):
  Kaggle rejects what they reject, so a local score for it would be misleading.
* Only rows present in BOTH the submission and the ground truth are scored: ground truth
  is restricted to the submission's ids, and submission ids without ground truth are
  counted (``n_*_ids_without_truth``) and ignored.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from .boxes import iou_matrix
from .data import IMAGE_CLASSES, IMAGE_SUFFIX, STUDY_CLASSES, STUDY_SUFFIX, strip_suffix
from .errors import EXIT_PARTIAL, EXIT_USAGE, UserError
from .submission import (
    FIRST_DATA_LINE,
    FULL_BOX,
    SubmissionError,
    check_rows,
    print_problems,
    read_submission,
    validate_submission,
)

CLASSES: tuple[str, ...] = STUDY_CLASSES + IMAGE_CLASSES
IOU_THRESHOLD = 0.5

Detection = tuple[Hashable, float, float, float, float, float]  # (row, conf, x0, y0, x1, y1)


def voc_ap(recall: Sequence[float], precision: Sequence[float]) -> float:
    """VOC 2010 all-point AP: sum over recall steps of the monotone precision envelope."""
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.shape != prec.shape or rec.ndim != 1:
        raise ValueError(f"recall and precision must be 1-D of one length, got {rec.shape} and {prec.shape}")
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, from the right
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def match_detections(
    detections: Sequence[Detection],
    truths: Mapping[Hashable, np.ndarray | Sequence[Sequence[float]]],
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """-> (confidences sorted descending, is-true-positive flags in that order).

    Stable sort, so tied detections keep the order they were given in."""
    n = len(detections)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    rows = [d[0] for d in detections]
    scores = np.fromiter((float(d[1]) for d in detections), dtype=np.float64, count=n)
    boxes = np.asarray([d[2:6] for d in detections], dtype=np.float64).reshape(n, 4)
    order = np.argsort(-scores, kind="stable")

    # IoU of every detection against the ground truth of its own row, one matrix per row.
    by_row: dict[Hashable, list[int]] = {}
    for i, r in enumerate(rows):
        by_row.setdefault(r, []).append(i)
    det_iou: list[np.ndarray | None] = [None] * n
    matched: dict[Hashable, np.ndarray] = {}
    for r, idx in by_row.items():
        gt = truths.get(r)
        if gt is None or len(gt) == 0:
            continue
        m = iou_matrix(boxes[idx], np.asarray(gt, dtype=np.float64).reshape(-1, 4))
        for k, i in enumerate(idx):
            det_iou[i] = m[k]
        matched[r] = np.zeros(m.shape[1], dtype=bool)

    tp = np.zeros(n, dtype=bool)
    for rank, i in enumerate(order):
        iou = det_iou[i]
        if iou is None:
            continue
        free = np.where(matched[rows[i]], -1.0, iou)
        j = int(np.argmax(free))
        if free[j] > iou_threshold:
            tp[rank] = True
            matched[rows[i]][j] = True
    return scores[order], tp


def precision_recall(
    scores_sorted: np.ndarray, tp_sorted: np.ndarray, n_truth: int, *, group_ties: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision down the ranking (one point per distinct confidence
    when ``group_ties``, else one per detection)."""
    tp = np.cumsum(tp_sorted)
    fp = np.cumsum(~np.asarray(tp_sorted, dtype=bool))
    if group_ties and len(scores_sorted):
        last_of_run = np.r_[scores_sorted[1:] != scores_sorted[:-1], True]
        tp, fp = tp[last_of_run], fp[last_of_run]
    recall = tp / max(n_truth, 1)
    precision = tp / np.maximum(tp + fp, 1)
    return recall, precision


def average_precision(
    detections: Sequence[Detection],
    truths: Mapping[Hashable, np.ndarray | Sequence[Sequence[float]]],
    *,
    iou_threshold: float = IOU_THRESHOLD,
    group_ties: bool = True,
) -> float:
    """AP of one class. ``detections``: (row, conf, x0, y0, x1, y1); ``truths``: row -> (M, 4)
    xyxy boxes of that class. A detection in a row absent from ``truths`` is a false
    positive. NaN when ``truths`` holds no box."""
    n_truth = int(sum(len(v) for v in truths.values()))
    if n_truth == 0:
        return math.nan
    scores, tp = match_detections(detections, truths, iou_threshold=iou_threshold)
    recall, precision = precision_recall(scores, tp, n_truth, group_ties=group_ties)
    return voc_ap(recall, precision)


def nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarize(ap: Mapping[str, float]) -> dict[str, float]:
    """Six class APs -> score (mean of the APs that exist), study_map, image_map."""
    return {
        "score": nanmean([ap[c] for c in CLASSES]),
        "study_map": nanmean([ap[c] for c in STUDY_CLASSES]),
        "image_map": nanmean([ap[c] for c in IMAGE_CLASSES]),
    }


def combine_partials(study_map: float, opacity_ap: float, none_ap: float) -> float:
    """Overall score from reported partials: (4 * study mAP + opacity AP + none AP) / 6."""
    return (len(STUDY_CLASSES) * study_map + opacity_ap + none_ap) / len(CLASSES)


def _index_truth(ids, values, suffix: str, what: str) -> dict:
    """id (suffix stripped) -> value; a repeated id is an error (it would count its truth twice)."""
    out: dict = {}
    for key, value in zip(ids, values):
        key = strip_suffix(str(key), suffix)
        if key in out:
            raise ValueError(f"{what} ground truth lists {key} more than once")
        out[key] = value
    return out


def _truth_tables(study_truth: pd.DataFrame | None, image_truth: pd.DataFrame | None) -> tuple[dict, dict]:
    """-> ({study_id: class name}, {image_id: list of opacity boxes}) from the data.read_* frames."""
    studies = {} if study_truth is None else _index_truth(
        study_truth["study_id"], (STUDY_CLASSES[int(v)] for v in study_truth["label"]), STUDY_SUFFIX, "study")
    images = {} if image_truth is None else _index_truth(
        image_truth["image_id"], (list(b) for b in image_truth["boxes"]), IMAGE_SUFFIX, "image")
    return studies, images


def score_submission(
    submission_df: pd.DataFrame,
    study_truth_df: pd.DataFrame | None,
    image_truth_df: pd.DataFrame | None,
    *,
    group_ties: bool = True,
    iou_threshold: float = IOU_THRESHOLD,
    allow_invalid: bool = False,
) -> dict:
    """Score a submission (columns id, PredictionString) against the ground truth frames of
    ``data.read_study_csv`` / ``data.read_image_csv`` (either may be None).

    Rows are checked by :func:`submission.check_rows` first (row i of the frame is file line
    i + 2). Any problem raises :class:`submission.SubmissionError` listing EVERY bad row
    (``.problems``), unless ``allow_invalid``: then the rows that parse are scored as given
    (an empty row as no detection; a repeated id counts once) and ``problems`` / ``valid``
    say what Kaggle would reject. ValueError when no submission id has ground truth. Returns a
    JSON-ready dict: score, study_map, image_map, ap (six classes, None when skipped),
    n_classes_scored, skipped_classes, n_truth, n_detections, row counts, valid, problems."""
    missing_cols = {"id", "PredictionString"} - set(submission_df.columns)
    if missing_cols:
        raise SubmissionError(f"submission lacks columns {sorted(missing_cols)}")
    studies, images = _truth_tables(study_truth_df, image_truth_df)

    problems: list[str] = []
    rows = zip(range(FIRST_DATA_LINE, FIRST_DATA_LINE + len(submission_df)),
               submission_df["id"].astype(str), submission_df["PredictionString"])
    checked = check_rows(rows, problems)
    if problems and not allow_invalid:
        raise SubmissionError(f"{len(problems)} problem(s) in the submission", problems)

    detections: dict[str, list[Detection]] = {c: [] for c in CLASSES}
    scored = {"study": [], "image": []}
    without_truth = {"study": 0, "image": 0}
    for _line, row_id, kind, preds, _ok in checked:
        key = strip_suffix(row_id, STUDY_SUFFIX if kind == "study" else IMAGE_SUFFIX)
        if key not in (studies if kind == "study" else images):
            without_truth[kind] += 1
            continue
        scored[kind].append(key)
        for label, conf, x0, y0, x1, y1 in preds:
            detections[label].append((row_id, conf, x0, y0, x1, y1))
    if not scored["study"] and not scored["image"]:
        raise ValueError(
            f"no submission id has ground truth ({without_truth['study']} study and "
            f"{without_truth['image']} image ids looked up): wrong truth files?"
        )

    # Ground truth of the scored rows only, keyed like the detections (id with suffix).
    truths: dict[str, dict[str, list]] = {c: {} for c in CLASSES}
    for sid in scored["study"]:
        truths[studies[sid]][sid + STUDY_SUFFIX] = [FULL_BOX]
    for iid in scored["image"]:
        boxes = images[iid]
        if boxes:
            truths["opacity"][iid + IMAGE_SUFFIX] = boxes
        else:
            truths["none"][iid + IMAGE_SUFFIX] = [FULL_BOX]

    ap = {
        c: average_precision(detections[c], truths[c], iou_threshold=iou_threshold, group_ties=group_ties)
        for c in CLASSES
    }
    out = summarize(ap)
    skipped = [c for c in CLASSES if math.isnan(ap[c])]
    out.update(
        {
            "ap": ap,
            "n_classes_scored": len(CLASSES) - len(skipped),
            "skipped_classes": skipped,
            "n_truth": {c: int(sum(len(v) for v in truths[c].values())) for c in CLASSES},
            "n_detections": {c: len(detections[c]) for c in CLASSES},
            "n_study_rows": len(scored["study"]),
            "n_image_rows": len(scored["image"]),
            "n_study_ids_without_truth": without_truth["study"],
            "n_image_ids_without_truth": without_truth["image"],
            "n_truth_studies_not_in_submission": len(studies) - len(scored["study"]),
            "n_truth_images_not_in_submission": len(images) - len(scored["image"]),
            "iou_threshold": iou_threshold,
            "ties": "grouped" if group_ties else "per-detection",
            "valid": not problems,
            "problems": problems,
        }
    )
    return out


def summary_lines(result: Mapping) -> list[str]:
    """The human summary of a score (``score`` prints it on stderr; stdout stays the JSON)."""
    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [f"score {f(result['score'])} (study mAP {f(result['study_map'])}, image mAP {f(result['image_map'])}) "
             f"over {result['n_study_rows']} study and {result['n_image_rows']} image rows"]
    skipped = list(result.get("skipped_classes") or [])
    if skipped:
        lines.append(
            f"no ground truth for {', '.join(skipped)} in the scored rows: the score is the mean of "
            f"{len(CLASSES) - len(skipped)} class APs, not {len(CLASSES)} (Kaggle's test set has every class)")
    lines.append(coverage_line(result))
    n_extra = result.get("n_study_ids_without_truth", 0) + result.get("n_image_ids_without_truth", 0)
    if n_extra:
        lines.append(f"{n_extra} submission id(s) have no ground truth and were not scored")
    return lines


def missing_truth(result: Mapping) -> int:
    """Ground-truth studies + images the scored submission has no row for."""
    return int(result.get("n_truth_studies_not_in_submission", 0)) + int(result.get("n_truth_images_not_in_submission", 0))


def coverage_line(result: Mapping) -> str:
    """'8 of 8 truth studies and 5 of 16 truth images have a submission row'."""
    s, i = result["n_study_rows"], result["n_image_rows"]
    return (f"{s} of {s + result.get('n_truth_studies_not_in_submission', 0)} truth studies and {i} of "
            f"{i + result.get('n_truth_images_not_in_submission', 0)} truth images have a submission row")


def json_ready(obj):
    """NaN (a class without truth) -> None, recursively, so the JSON stays valid."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_ready(v) for v in obj]
    return obj


def find_truth_files(truth_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The ``*study_level.csv`` and ``*image_level.csv`` of a folder.

    ``DIR/truth/`` (where synthetic sets keep the test truth) wins over ``DIR`` itself (the
    competition folder's train_*.csv), so both a synthetic set's root and its truth/ work."""
    truth_dir = Path(truth_dir)
    for d in (truth_dir / "truth", truth_dir):
        study = sorted(d.glob("*study_level.csv"))
        image = sorted(d.glob("*image_level.csv"))
        if not study and not image:
            continue
        if len(study) != 1 or len(image) != 1:
            raise FileNotFoundError(
                f"{d}: need exactly one *study_level.csv and one *image_level.csv, "
                f"found {[p.name for p in study]} and {[p.name for p in image]}"
            )
        return study[0], image[0]
    raise FileNotFoundError(f"{truth_dir}: no *study_level.csv / *image_level.csv here or in truth/")


def cli(argv: list[str]) -> int:
    """Score a submission.csv with the competition metric: the JSON result on stdout, a human
    summary on stderr. The submission is validated first, exactly as validate-submission does;
    an invalid one is refused (exit 2) unless --score-invalid."""
    import argparse

    from .clihelp import HelpFormatter
    from .data import SAMPLE_SUBMISSION, find_data_dir, read_image_csv, read_study_csv
    from .log import run_header

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid score", description=cli.__doc__,
        formatter_class=HelpFormatter,
        epilog="Writes nothing unless --out. Exit 0: scored; 1: scored with --score-invalid although Kaggle would "
               "reject the file; 2: not scored (a wrong path, or an invalid submission, its problems listed by "
               "file line, header = line 1). Ids and box bounds are checked against the competition folder "
               "(--data, or the --truth folder of a synthetic set, which holds sample_submission.csv and truth/).")
    ap.add_argument("submission", help="submission.csv (id,PredictionString)")
    ap.add_argument("--truth", default=None, help="folder with one *study_level.csv and one *image_level.csv "
                                                  "(or those in its truth/ sub-folder, as a synthetic set keeps them)")
    ap.add_argument("--study-csv", default=None, help="study ground truth (train_study_level.csv format)")
    ap.add_argument("--image-csv", default=None, help="image ground truth (train_image_level.csv format)")
    ap.add_argument("--data", default=None,
                    help="competition folder to validate against (sample ids, DICOM sizes); default: the --truth "
                         "folder when it holds sample_submission.csv and truth/, else the file's own rows only")
    ap.add_argument("--skip-bounds", action="store_true", help="do not read DICOM headers to check box bounds")
    ap.add_argument("--score-invalid", action="store_true",
                    help="score a submission that fails validation anyway (exit 1), with a loud warning that "
                         "Kaggle would reject it")
    ap.add_argument("--subset", action="store_true",
                    help="score only the truth rows the submission holds (default: a truth study or image without a "
                         "row is refused, as Kaggle refuses a file that lacks a test row)")
    ap.add_argument("--per-detection-ties", action="store_true",
                    help="one PR point per detection (VOC devkit) instead of one per distinct confidence")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    a = ap.parse_args(argv)
    if a.truth and (a.study_csv or a.image_csv):
        raise UserError("use either --truth DIR or --study-csv/--image-csv, not both")
    if not (a.truth or a.study_csv or a.image_csv):
        raise UserError("ground truth needed: --truth DIR or --study-csv F --image-csv F")
    try:
        study_csv, image_csv = find_truth_files(a.truth) if a.truth else (a.study_csv, a.image_csv)
        study_truth = read_study_csv(study_csv) if study_csv else None
        image_truth = read_image_csv(image_csv) if image_csv else None
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    data_dir = None
    if a.data:
        data_dir = find_data_dir(a.data)
    elif a.truth and (Path(a.truth) / SAMPLE_SUBMISSION).is_file() and Path(study_csv).parent == Path(a.truth) / "truth":
        data_dir = Path(a.truth)  # a synthetic set: its truth/ is the truth of its sample_submission ids
    if not Path(a.submission).is_file():
        raise UserError(f"{a.submission}: no such file (pass the submission.csv to score)")
    run_header("score", vars(a))

    problems = validate_submission(a.submission, data_dir, check_bounds=not a.skip_bounds)
    checked = (f"validated against {data_dir}" + (" (box bounds not checked)" if a.skip_bounds else "")
               if data_dir else "validated rows only (no --data: ids and box bounds not checked)")
    if problems and not a.score_invalid:
        print_problems(f"score: {a.submission} is not a valid submission, not scored", problems, file=sys.stderr)
        print("score: fix it (or pass --score-invalid to score it anyway)", file=sys.stderr)
        return EXIT_USAGE
    try:
        sub = read_submission(a.submission)
        result = score_submission(sub, study_truth, image_truth, group_ties=not a.per_detection_ties,
                                  allow_invalid=a.score_invalid)
    except ValueError as exc:  # SubmissionError included: an unreadable file, or no id with truth
        raise UserError(f"{a.submission}: {exc}") from None
    if missing_truth(result) and not a.subset:
        # without --data nothing else notices: 2 rows of 8 would score 1.0 on the rows given
        print(f"score: {a.submission} is not scored: {coverage_line(result)}; Kaggle refuses a submission "
              f"without every test row. Pass --subset to score only the rows it holds", file=sys.stderr)
        return EXIT_USAGE
    result["subset"] = bool(missing_truth(result))
    result["problems"] = problems  # the validator's list: the same rows, plus ids and bounds
    result["valid"] = not problems
    result["validation"] = checked
    result["submission"] = str(a.submission)
    result["truth_files"] = [str(p) for p in (study_csv, image_csv) if p]
    text = json.dumps(json_ready(result), sort_keys=False)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    if problems:
        bar = "!" * 78
        print(f"{bar}\nscore: KAGGLE WOULD REJECT {a.submission}: {len(problems)} problem(s); the score below is "
              f"not a Kaggle score\n{bar}", file=sys.stderr)
        print_problems(f"score: {a.submission}", problems, file=sys.stderr)
    for line in summary_lines(result):
        print(f"score: {line}", file=sys.stderr)
    print(f"score: {checked}", file=sys.stderr)
    return EXIT_PARTIAL if problems else 0
