"""The competition metric, checked against hand-computed values (see metric.py's docstring)."""
import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from siimcovid.boxes import iou_matrix
from siimcovid.data import STUDY_CLASSES, STUDY_COLUMNS, format_boxes_column, format_label, read_image_csv, read_study_csv
from siimcovid.metric import (
    CLASSES,
    average_precision,
    cli,
    combine_partials,
    find_truth_files,
    match_detections,
    score_submission,
    voc_ap,
)
from siimcovid.errors import UserError
from siimcovid.submission import SubmissionError, format_image_prediction, format_study_prediction, validate_submission

# Five studies, six images (s5 holds two). Priors: negative 1/5 studies, none 3/6 images.
STUDIES = {"s1": "negative", "s2": "typical", "s3": "indeterminate", "s4": "atypical", "s5": "typical"}
IMAGES = {  # image -> (study, opacity boxes xyxy)
    "i1": ("s1", []),
    "i2": ("s2", [[10, 10, 40, 60], [60, 10, 90, 60]]),
    "i3": ("s3", [[20, 20, 50, 50]]),
    "i4": ("s4", []),
    "i5": ("s5", [[5, 5, 30, 30]]),
    "i6": ("s5", []),
}


def write_truth(folder, studies=STUDIES, images=IMAGES, prefix="test"):
    """The two ground-truth CSVs in the competition's exact format."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for sid, cls in studies.items():
        onehot = [int(c == cls) for c in STUDY_CLASSES]
        rows.append([f"{sid}_study", *onehot])
    pd.DataFrame(rows, columns=["id", *STUDY_COLUMNS]).to_csv(folder / f"{prefix}_study_level.csv", index=False)
    rows = [[f"{iid}_image", format_boxes_column(b), format_label(b), sid] for iid, (sid, b) in images.items()]
    pd.DataFrame(rows, columns=["id", "boxes", "label", "StudyInstanceUID"]).to_csv(
        folder / f"{prefix}_image_level.csv", index=False
    )
    return folder / f"{prefix}_study_level.csv", folder / f"{prefix}_image_level.csv"


@pytest.fixture()
def truth(tmp_path):
    study_csv, image_csv = write_truth(tmp_path / "truth")
    return read_study_csv(study_csv), read_image_csv(image_csv)


def sub_frame(rows: dict) -> pd.DataFrame:
    return pd.DataFrame({"id": list(rows), "PredictionString": list(rows.values())})


def perfect_rows() -> dict:
    rows = {f"{s}_study": format_study_prediction([float(c == cls) for c in STUDY_CLASSES]) for s, cls in STUDIES.items()}
    for iid, (_, boxes) in IMAGES.items():
        rows[f"{iid}_image"] = format_image_prediction([[*b, 1.0] for b in boxes], 0.0 if boxes else 1.0)
    return rows


def sample_default_rows() -> dict:
    rows = {f"{s}_study": "negative 1 0 0 1 1" for s in STUDIES}
    rows.update({f"{i}_image": "none 1 0 0 1 1" for i in IMAGES})
    return rows


# --- AP building blocks ------------------------------------------------------------------


def test_voc_ap_all_point_with_envelope():
    assert voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)
    # Precision rises later: the envelope lifts the first step to 1.0.
    assert voc_ap([0.25, 0.5], [0.5, 1.0]) == pytest.approx(0.5)
    assert voc_ap([], []) == 0.0


def test_hand_worked_mixed_pr_case():
    truths = {"A": [[0, 0, 10, 10], [20, 20, 30, 30]], "B": [[0, 0, 10, 10]]}
    dets = [
        ("A", 0.9, 0, 0, 10, 10),  # TP
        ("B", 0.8, 50, 50, 60, 60),  # FP: no overlap
        ("A", 0.7, 0, 0, 10, 10),  # FP: its box is taken
        ("B", 0.6, 0, 0, 10, 10),  # TP
        ("A", 0.5, 20, 20, 30, 30),  # TP
    ]
    # precision 1, .5, .33, .5, .6 at recall 1/3, 1/3, 1/3, 2/3, 1 -> envelope 1, .6, .6
    expected = (1 / 3) * 1.0 + (1 / 3) * 0.6 + (1 / 3) * 0.6
    ap = average_precision(dets, truths)
    assert ap == pytest.approx(expected)
    assert ap != pytest.approx((4 * 1.0 + 7 * 0.6) / 11)  # not VOC 2007 11-point
    assert ap != pytest.approx(1 / 3 + 0.5 / 3 + 0.6 / 3)  # not without the envelope


def test_duplicate_detection_is_a_false_positive():
    truths = {"A": [[0, 0, 10, 10]], "B": [[0, 0, 10, 10]]}
    dets = [("A", 0.9, 0, 0, 10, 10), ("A", 0.8, 0, 0, 10, 10), ("B", 0.7, 0, 0, 10, 10)]
    scores, tp = match_detections(dets, truths)
    assert tp.tolist() == [True, False, True]
    assert average_precision(dets, truths) == pytest.approx(0.5 + 0.5 * (2 / 3))


def test_iou_exactly_half_is_not_a_match():
    gt = {"A": [[0, 0, 10, 10]]}
    assert iou_matrix([[0, 0, 10, 5]], gt["A"])[0, 0] == 0.5
    assert average_precision([("A", 0.9, 0, 0, 10, 5)], gt) == 0.0
    assert average_precision([("A", 0.9, 0, 0, 10, 5.02)], gt) == 1.0


def test_greedy_takes_best_unmatched_box():
    # The first detection prefers G1; the second overlaps G1 best but G1 is taken, G2 > 0.5.
    truths = {"A": [[0, 0, 10, 10], [2, 0, 12, 10]]}
    dets = [("A", 0.9, 0, 0, 10, 10), ("A", 0.8, 1, 0, 11, 10)]
    assert match_detections(dets, truths)[1].tolist() == [True, True]


def test_tied_matching_follows_submission_order():
    # A overlaps G1 (0.82) and G2 (0.67); B only G1 (0.70). Same confidence: order decides.
    truths = {"r": [[0, 0, 10, 10], [3, 0, 13, 10]]}
    a, b = ("r", 0.8, 1, 0, 11, 10), ("r", 0.8, 0, 0, 7, 10)
    assert match_detections([a, b], truths)[1].tolist() == [True, False]
    assert match_detections([b, a], truths)[1].tolist() == [True, True]
    assert average_precision([a, b], truths) == pytest.approx(0.25)  # one point: recall .5, precision .5
    assert average_precision([b, a], truths) == pytest.approx(1.0)


def test_no_truth_gives_nan_and_no_detections_give_zero():
    assert math.isnan(average_precision([("A", 0.9, 0, 0, 1, 1)], {}))
    assert average_precision([], {"A": [[0, 0, 1, 1]]}) == 0.0


def test_worked_example_partials():
    assert combine_partials(0.592, 0.594, 0.822) == pytest.approx(0.631, abs=5e-4)


# --- whole submissions --------------------------------------------------------------------


def test_perfect_submission_scores_one(truth):
    r = score_submission(sub_frame(perfect_rows()), *truth)
    assert r["score"] == 1.0 and r["study_map"] == 1.0 and r["image_map"] == 1.0
    assert all(r["ap"][c] == 1.0 for c in CLASSES)
    assert r["n_study_rows"] == 5 and r["n_image_rows"] == 6
    assert r["n_truth"] == {"negative": 1, "typical": 2, "indeterminate": 1, "atypical": 1, "opacity": 4, "none": 3}


def test_all_wrong_scores_zero(truth):
    rows = {}
    for s, cls in STUDIES.items():
        wrong = STUDY_CLASSES[(STUDY_CLASSES.index(cls) + 1) % 4]
        rows[f"{s}_study"] = f"{wrong} 1 0 0 1 1"
    for iid, (_, boxes) in IMAGES.items():
        rows[f"{iid}_image"] = "none 1 0 0 1 1" if boxes else "opacity 1 0 0 10 10"
    r = score_submission(sub_frame(rows), *truth)
    assert r["score"] == 0.0
    assert all(r["ap"][c] == 0.0 for c in CLASSES)


def test_sample_submission_default_scores_the_priors(truth):
    expected = (1 / 5 + 3 / 6) / 6
    rows = sample_default_rows()
    r = score_submission(sub_frame(rows), *truth)
    assert r["score"] == pytest.approx(expected, abs=1e-12)
    assert r["ap"]["negative"] == pytest.approx(1 / 5) and r["ap"]["none"] == pytest.approx(3 / 6)
    # Tied confidences: the row order does not matter.
    for order in (list(rows)[::-1], sorted(rows, key=lambda k: (k[1:] in ("1_study", "1_image"), k))):
        assert score_submission(sub_frame({k: rows[k] for k in order}), *truth)["score"] == pytest.approx(expected)


def test_per_detection_ties_depend_on_row_order(truth):
    rows = sample_default_rows()
    neg_first = {k: rows[k] for k in sorted(rows, key=lambda k: k != "s1_study")}
    neg_last = {k: rows[k] for k in sorted(rows, key=lambda k: k == "s1_study")}
    assert score_submission(sub_frame(neg_first), *truth, group_ties=False)["ap"]["negative"] == 1.0
    assert score_submission(sub_frame(neg_last), *truth, group_ties=False)["ap"]["negative"] == pytest.approx(0.2)


def test_truth_restricted_to_submission_ids(truth):
    rows = {
        "s1_study": "negative 1 0 0 1 1",
        "s2_study": "typical 0.9 0 0 1 1 negative 0.2 0 0 1 1",
        "zzz_study": "negative 1 0 0 1 1",  # no truth: ignored, not a false positive
        "i1_image": "none 0.9 0 0 1 1",
        "i2_image": "opacity 0.8 10 10 40 60 none 0.1 0 0 1 1",
        "zzz_image": "none 1 0 0 1 1",
    }
    r = score_submission(sub_frame(rows), *truth)
    assert (r["n_study_rows"], r["n_image_rows"]) == (2, 2)
    assert (r["n_study_ids_without_truth"], r["n_image_ids_without_truth"]) == (1, 1)
    assert (r["n_truth_studies_not_in_submission"], r["n_truth_images_not_in_submission"]) == (3, 4)
    assert r["ap"]["negative"] == 1.0 and r["ap"]["typical"] == 1.0
    assert r["ap"]["opacity"] == pytest.approx(0.5)  # 1 of the 2 boxes of i2, precision 1
    assert r["n_truth"]["opacity"] == 2  # i3, i5 boxes are not counted
    # Same result as scoring against truth frames cut to these ids.
    st, it = truth
    cut = score_submission(sub_frame(rows), st[st.study_id.isin(["s1", "s2"])], it[it.image_id.isin(["i1", "i2"])])
    assert cut["ap"] == r["ap"]


def test_class_without_truth_is_skipped(truth):
    rows = {k: v for k, v in perfect_rows().items() if not k.startswith(("s4", "i4"))}
    rows["s1_study"] = "negative 0.5 0 0 1 1 atypical 0.9 0 0 1 1"  # an atypical guess with no atypical truth
    r = score_submission(sub_frame(rows), *truth)
    assert r["skipped_classes"] == ["atypical"]
    assert math.isnan(r["ap"]["atypical"])
    assert r["score"] == pytest.approx(sum(r["ap"][c] for c in CLASSES if c != "atypical") / 5)
    assert r["study_map"] == pytest.approx((r["ap"]["negative"] + 1 + 1) / 3)


def test_every_bad_row_is_named(truth):
    rows = {
        "s1_study": "negative 1 0 0 1",  # 5 tokens
        "s2_study": "opacity 0.5 0 0 1 1",  # image label in a study row
        "s3_study": "typical nan 0 0 1 1",
        "i1_image": "none 1 0 0 1 1",
        "i2": "none 1 0 0 1 1",  # no suffix
    }
    df = sub_frame(rows)
    df = pd.concat([df, sub_frame({"i1_image": "none 1 0 0 1 1"})], ignore_index=True)  # duplicate id
    with pytest.raises(SubmissionError) as e:
        score_submission(df, *truth)
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 5, text
    # File lines, as validate-submission numbers them: the header is line 1, row i is line i + 2.
    for needle in ("line 2 (s1_study): 5 tokens", "line 3 (s2_study): group 1: unknown label 'opacity'",
                   "line 4 (s3_study): group 1: conf 'nan'", "line 6 (i2): id ends neither",
                   "line 7: id i1_image repeats line 5"):
        assert needle in text


def test_no_overlap_with_truth_is_an_error(truth):
    with pytest.raises(ValueError, match="no submission id has ground truth"):
        score_submission(sub_frame({"x_study": "negative 1 0 0 1 1"}), *truth)


# --- CLI ----------------------------------------------------------------------------------


def test_find_truth_files_prefers_truth_subfolder(tmp_path):
    write_truth(tmp_path, prefix="train")
    write_truth(tmp_path / "truth", prefix="test")
    assert [p.name for p in find_truth_files(tmp_path)] == ["test_study_level.csv", "test_image_level.csv"]
    write_truth(tmp_path / "truth", prefix="other")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        find_truth_files(tmp_path)


def test_cli_prints_one_json_object(tmp_path, capsys):
    write_truth(tmp_path / "truth")
    sub = tmp_path / "submission.csv"
    sub_frame(sample_default_rows()).to_csv(sub, index=False)
    assert cli([str(sub), "--truth", str(tmp_path), "--out", str(tmp_path / "s.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["score"] == pytest.approx((1 / 5 + 3 / 6) / 6)
    assert set(out["ap"]) == set(CLASSES) and out["n_study_rows"] == 5 and out["n_image_rows"] == 6
    assert json.loads((tmp_path / "s.json").read_text()) == out


def test_cli_bad_rows_are_refused_with_exit_2(tmp_path, capsys):
    study_csv, image_csv = write_truth(tmp_path / "truth")
    sub = tmp_path / "submission.csv"
    sub_frame({"s1_study": "negative 1 0 0", "i1_image": "none x 0 0 1 1"}).to_csv(sub, index=False)
    assert cli([str(sub), "--study-csv", str(study_csv), "--image-csv", str(image_csv), "--out", str(tmp_path / "s.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "s.json").exists()  # nothing scored, nothing written
    assert "2 problem(s)" in captured.err and "line 2 (s1_study)" in captured.err and "line 3 (i1_image)" in captured.err


def test_score_command_subprocess_skips_class_as_null(tmp_path):
    write_truth(tmp_path / "truth")
    sub = tmp_path / "submission.csv"
    rows = {k: v for k, v in perfect_rows().items() if not k.startswith(("s4", "i4"))}
    sub_frame(rows).to_csv(sub, index=False)
    # the rows of s4 / i4 are left out on purpose: a subset, scored only when asked for (issue 24)
    r = subprocess.run([sys.executable, "-m", "siimcovid", "score", str(sub), "--truth", str(tmp_path / "truth"),
                        "--subset"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout stays exactly one JSON object (the demo captures it)
    assert out["ap"]["atypical"] is None and out["skipped_classes"] == ["atypical"] and out["score"] == 1.0
    assert out["n_classes_scored"] == 5
    # ... and the human summary on stderr says the score is a mean of five
    assert "no ground truth for atypical in the scored rows: the score is the mean of 5 class APs, not 6" in r.stderr


# A submission Kaggle rejects: an inverted box, `none 1.5`, an empty PredictionString.
INVALID = {"a1": "opacity 0.5 40 10 10 60 none 0.5 0 0 1 1", "b": "none 1.5 0 0 1 1", "c": ""}


def invalid_rows() -> dict:
    rows = perfect_rows()
    rows["i2_image"], rows["i4_image"], rows["i6_image"] = INVALID["a1"], INVALID["b"], INVALID["c"]
    return rows


def test_score_refuses_what_the_validator_rejects_with_the_same_line_numbers(truth, tmp_path, capsys):
    sub = tmp_path / "submission.csv"
    sub_frame(invalid_rows()).to_csv(sub, index=False)
    expected = validate_submission(sub, None)
    assert expected == [
        "line 8 (i2_image): group 1 (opacity): box 40 10 10 60 needs x0 < x1 and y0 < y1",
        "line 10 (i4_image): group 1 (none): confidence 1.5 outside [0, 1]",
        "line 12 (i6_image): empty PredictionString",
    ]
    with pytest.raises(SubmissionError) as e:
        score_submission(sub_frame(invalid_rows()), *truth)
    assert e.value.problems == expected  # one validation, one numbering
    write_truth(tmp_path / "truth")
    assert cli([str(sub), "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "s.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "s.json").exists()
    for p in expected:
        assert p in captured.err
    assert "not scored" in captured.err and "--score-invalid" in captured.err


def test_score_invalid_flag_scores_but_says_kaggle_would_reject(truth, tmp_path, capsys):
    write_truth(tmp_path / "truth")
    sub = tmp_path / "submission.csv"
    sub_frame(invalid_rows()).to_csv(sub, index=False)
    assert cli([str(sub), "--truth", str(tmp_path / "truth"), "--score-invalid"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["valid"] is False and len(out["problems"]) == 3 and 0 < out["score"] < 1
    assert "KAGGLE WOULD REJECT" in captured.err
    r = score_submission(sub_frame(invalid_rows()), *truth, allow_invalid=True)
    assert r["valid"] is False and r["n_image_rows"] == 6  # the empty row counts as no detection


def test_score_checks_sample_ids_of_a_synthetic_set(tmp_path, capsys):
    """--truth DIR of a synthetic set (sample_submission.csv + truth/): the ids are checked like
    validate-submission --data DIR does."""
    write_truth(tmp_path / "truth")
    rows = sample_default_rows()
    sub_frame(rows).to_csv(tmp_path / "sample_submission.csv", index=False)
    sub = tmp_path / "submission.csv"
    sub_frame({k: v for k, v in rows.items() if k != "s3_study"}).to_csv(sub, index=False)
    assert cli([str(sub), "--truth", str(tmp_path), "--skip-bounds"]) == 2
    assert "missing id s3_study (in sample_submission.csv)" in capsys.readouterr().err
    sub_frame(rows).to_csv(sub, index=False)
    assert cli([str(sub), "--truth", str(tmp_path), "--skip-bounds"]) == 0
    assert "validated against" in capsys.readouterr().err


def test_score_user_mistakes_are_user_errors(tmp_path):
    write_truth(tmp_path / "truth")
    with pytest.raises(UserError, match="nope.csv: no such file"):
        cli([str(tmp_path / "nope.csv"), "--truth", str(tmp_path)])
    with pytest.raises(UserError, match="no \\*study_level.csv"):
        cli([str(tmp_path / "nope.csv"), "--truth", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match="not both"):
        cli(["x.csv", "--truth", str(tmp_path), "--study-csv", "a.csv"])


def test_repeated_truth_id_is_an_error(truth):
    st, it = truth
    with pytest.raises(ValueError, match="study ground truth lists s1 more than once"):
        score_submission(sub_frame(sample_default_rows()), pd.concat([st, st.iloc[:1]]), it)
    with pytest.raises(ValueError, match="image ground truth lists i2 more than once"):
        score_submission(sub_frame(sample_default_rows()), st, pd.concat([it, it.iloc[[1]]]))


# ---------------------------------------------------------------- issue 24: no silent wrong result


def test_score_refuses_a_submission_missing_truth_rows_unless_subset(tmp_path, capsys):
    """Truth CSVs and no --data: 2 of the rows used to score 1.0 with nothing said. Now refused
    (exit 2, the counts printed) unless --subset, which scores and still prints the counts."""
    from siimcovid.__main__ import main

    write_truth(tmp_path / "truth")
    sub = tmp_path / "submission.csv"
    rows = dict(list(perfect_rows().items())[:2])
    sub_frame(rows).to_csv(sub, index=False)
    truth = ["--study-csv", str(tmp_path / "truth" / "test_study_level.csv"),
             "--image-csv", str(tmp_path / "truth" / "test_image_level.csv")]
    assert main(["score", str(sub), *truth]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not scored" in captured.err and "--subset" in captured.err
    assert "truth studies and" in captured.err and " of " in captured.err
    assert main(["score", str(sub), *truth, "--subset"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["subset"] is True
    assert "have a submission row" in captured.err
