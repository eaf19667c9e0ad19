"""The oracle submission: a synthetic set's ground truth (DATA/truth/) written as predictions.

Through make-submission and score it must give 1.0, so it checks the writing and scoring path (box
formatting, ids, original-pixel frame) end to end. Only synthetic sets have truth/: local only.
``python -m siimcovid oracle`` (also ``baseline --oracle``, routed by ``siimcovid.__main__``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..baseline import submission_parser, write_predictions
from ..data import STUDY_CLASSES, TRUTH_DIR, TRUTH_IMAGE_CSV, TRUTH_STUDY_CSV, read_image_csv, read_study_csv


def oracle_predictions(data_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(study predictions, image predictions, info) that are the set's truth, in the "Submission
    inputs" format of docs/contracts.md; FileNotFoundError when the set has no truth/."""
    truth = Path(data_dir) / TRUTH_DIR
    if not truth.is_dir():
        raise FileNotFoundError(f"{truth}: no ground truth (only synthetic sets have {TRUTH_DIR}/)")
    studies = read_study_csv(truth / TRUTH_STUDY_CSV)
    images = read_image_csv(truth / TRUTH_IMAGE_CSV)
    study = pd.DataFrame({"study_id": studies["study_id"]})
    for k, cls in enumerate(STUDY_CLASSES):
        study[cls] = (studies["label"] == k).astype(float)
    image = pd.DataFrame({
        "image_id": images["image_id"],
        "boxes": [json.dumps([[*map(float, b), 1.0] for b in boxes]) for boxes in images["boxes"]],
        "none": [0.0 if boxes else 1.0 for boxes in images["boxes"]],
    })
    return study, image, {"oracle": str(truth)}


def cli(argv: list[str]) -> int:
    ap = submission_parser(
        "python -m siimcovid oracle", "The ground truth of a synthetic set (DATA/truth) as a submission: must "
                                      "score 1.0.",
        "Writes OUT (every sample_submission.csv id once) and, when asked, the study / image prediction CSVs.")
    a = ap.parse_args(argv)
    return write_predictions("oracle", a, oracle_predictions, lambda info: f"oracle from {info['oracle']}")
