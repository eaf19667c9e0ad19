"""PredictionString writer/parser round trips, build_submission fallbacks, and the validator
on a tiny DICOM folder (two studies, three 48x64 / 64x48 uncompressed images)."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from siimcovid.data import STUDY_CLASSES
from siimcovid.errors import UserError
from siimcovid.submission import (
    DEFAULT_IMAGE,
    DEFAULT_STUDY,
    SubmissionError,
    build_submission,
    check_predictions,
    cli_make,
    cli_validate,
    format_image_prediction,
    format_study_prediction,
    parse_prediction_string,
    read_image_sizes,
    read_submission,
    split_ids,
    validate_submission,
    write_submission,
)

# image -> (study, series, rows, cols)
IMAGES = {"a1": ("stA", "seA", 48, 64), "b1": ("stB", "seB", 64, 48), "b2": ("stB", "seB", 64, 48)}


@pytest.fixture()
def mini(tmp_path):
    """A competition-shaped folder: test/<study>/<series>/<image>.dcm + sample_submission.csv."""
    from siimcovid.dev.synthetic import write_dicom

    data = tmp_path / "data"
    for iid, (sid, ser, h, w) in IMAGES.items():
        with warnings.catch_warnings():  # short ids are not valid DICOM UIs (nor are the real ones)
            warnings.simplefilter("ignore", UserWarning)
            write_dicom(data / "test" / sid / ser / f"{iid}.dcm", np.full((h, w), 100, np.uint16),
                        study_id=sid, series_id=ser, image_id=iid)
    ids = ["stA_study", "stB_study"] + [f"{i}_image" for i in IMAGES]
    strings = [DEFAULT_STUDY if i.endswith("_study") else DEFAULT_IMAGE for i in ids]
    pd.DataFrame({"id": ids, "PredictionString": strings}).to_csv(data / "sample_submission.csv", index=False)
    return data


def good_rows() -> dict:
    return {
        "stA_study": format_study_prediction([0.1, 0.6, 0.2, 0.1]),
        "stB_study": format_study_prediction([0.7, 0.1, 0.1, 0.1]),
        "a1_image": format_image_prediction([[1, 2, 63.9, 47, 0.8]], 0.15),
        "b1_image": format_image_prediction([[0, 0, 48, 64, 0.3], [10, 10, 20, 20, 0.01]], 0.6),
        "b2_image": format_image_prediction([], 0.9),
    }


def write_sub(path, rows: dict, header="id,PredictionString"):
    lines = [header] + [f"{k},{v}" for k, v in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- writing and parsing ------------------------------------------------------------------


def test_study_round_trip_and_number_format():
    probs = [0.123456789, 0.5, 1.23456789e-7, 1.0]
    s = format_study_prediction(probs)
    assert s.startswith("negative 0.123457 0 0 1 1 typical 0.5 0 0 1 1 indeterminate 0.000000123457 ")
    assert "e" not in s.replace("negative", "").replace("typical", "").replace("indeterminate", "").replace("atypical", "")
    parsed = parse_prediction_string(s)
    assert [p[0] for p in parsed] == list(STUDY_CLASSES)
    assert np.allclose([p[1] for p in parsed], probs, rtol=5e-6, atol=0)  # 6 significant digits
    assert all(p[2:] == (0.0, 0.0, 1.0, 1.0) for p in parsed)


def test_image_round_trip():
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, 2000, size=(7, 2))
    boxes = np.c_[xy0, xy0 + rng.uniform(5, 800, size=(7, 2)), rng.uniform(0, 1, size=7)]
    s = format_image_prediction(boxes, 0.25)
    parsed = parse_prediction_string(s, labels=("opacity", "none"))
    assert [p[0] for p in parsed] == ["opacity"] * 7 + ["none"]
    got = np.array([p[1:] for p in parsed[:-1]])
    assert np.abs(got[:, 1:] - boxes[:, :4]).max() <= 0.05 + 1e-9  # 0.1 px rounding
    assert np.allclose(got[:, 0], boxes[:, 4], rtol=1e-5, atol=1e-7)
    assert parsed[-1] == ("none", 0.25, 0.0, 0.0, 1.0, 1.0)
    # Formatting what was parsed gives the same string back.
    assert format_image_prediction(np.c_[got[:, 1:], got[:, 0]], 0.25) == s


def test_image_without_boxes_and_clipping():
    assert format_image_prediction(np.zeros((0, 5)), 0.9) == "none 0.9 0 0 1 1"
    assert format_image_prediction([[-5, 10, 70, 50.04, 0.5]], None, image_hw=(48, 64)) == "opacity 0.5 0 10 64 48"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: format_study_prediction([0.1, 0.2, 0.3]), "expected 4"),
        (lambda: format_study_prediction([0.1, float("nan"), 0.3, 0.1]), "typical: not finite"),
        (lambda: format_study_prediction([0.1, 1.5, 0.3, 0.1]), "outside"),
        (lambda: format_image_prediction([[10, 10, 10.02, 20, 0.5]], 0.5), "box 0: no area"),
        (lambda: format_image_prediction([[0, 0, 5, 5, 0.5], [0, 0, 5, 5, 2.0]], 0.5), "box 1 score"),
        (lambda: format_image_prediction([[0, 0, 5, 5]], 0.5), r"shape \(N, 5\)"),
    ],
)
def test_format_rejects_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_format_clips_float_noise():
    assert format_study_prediction([1.0000001, 0, 0, -1e-9]).split()[1] == "1"


@pytest.mark.parametrize(
    "s, match",
    [
        ("none 1 0 0 1", "row 7: 5 tokens, expected groups of six"),
        ("opacity 0.5 a 0 1 1", "row 7: group 1: x0 'a' is not a number"),
        ("none 1 0 0 1 1 opacity inf 0 0 1 1", "row 7: group 2: conf 'inf' is not finite"),
        ("negative 1 0 0 1 1", "row 7: group 1: unknown label 'negative'"),
    ],
)
def test_parse_errors_name_the_row(s, match):
    with pytest.raises(SubmissionError, match=match):
        parse_prediction_string(s, source="row 7", labels=("opacity", "none"))


def test_parse_empty_and_collects_all_issues():
    assert parse_prediction_string("") == [] and parse_prediction_string(float("nan")) == []
    with pytest.raises(SubmissionError) as e:
        parse_prediction_string("foo x 0 0 1 1 none 1 0 0 nan 1", labels=("none",))
    assert len(e.value.problems) == 3


def test_check_predictions_finds_each_range_problem():
    preds = [("negative", 1.2, 0, 0, 1, 1), ("typical", 0.5, 0, 0, 2, 1), ("negative", 0.1, 0, 0, 1, 1)]
    p = check_predictions(preds, "study")
    assert any("confidence 1.2 outside" in x for x in p)
    assert any("(typical): box must be 0 0 1 1" in x for x in p)
    assert any("'negative' appears 2 times" in x for x in p)
    p = check_predictions([("opacity", 0.5, 5, 5, 4, 9), ("opacity", 0.5, 0, 0, 10, 50)], "image", image_hw=(48, 64))
    assert any("needs x0 < x1" in x for x in p) and any("outside the 48x64" in x for x in p)
    assert check_predictions([("opacity", 0.5, 0, 0, 64, 48), ("none", 0.2, 0, 0, 1, 1)], "image", image_hw=(48, 64)) == []


# --- build_submission ---------------------------------------------------------------------


def test_build_submission_order_and_fallbacks():
    sample = pd.DataFrame({"id": ["s2_study", "s1_study", "i1_image", "i2_image", "i3_image"],
                           "PredictionString": ["negative 1 0 0 1 1"] * 2 + ["none 1 0 0 1 1"] * 3})
    study = pd.DataFrame({"study_id": ["s1", "s9"], "negative": [0.1, 0.5], "typical": [0.7, 0.5],
                          "indeterminate": [0.1, 0], "atypical": [0.1, 0]})
    image = pd.DataFrame({"image_id": ["i1", "i2", "i3"],
                          "boxes": [json.dumps([[1, 2, 30, 40, 0.9], [5, 5, 5, 9, 0.2]]), "[]", "[]"],
                          "none": [0.1, 0.8, float("nan")]})
    sub, problems = build_submission(sample, study, image)
    assert sub["id"].tolist() == sample["id"].tolist()
    s = dict(zip(sub["id"], sub["PredictionString"]))
    assert s["s2_study"] == "negative 1 0 0 1 1"  # missing -> the sample's string
    assert s["s1_study"].startswith("negative 0.1 0 0 1 1 typical 0.7 ")
    assert s["i1_image"] == "opacity 0.9 1 2 30 40 none 0.1 0 0 1 1"  # the zero-width box is dropped
    assert s["i2_image"] == "none 0.8 0 0 1 1"
    assert s["i3_image"] == "none 1 0 0 1 1"  # NaN none -> fallback
    text = "\n".join(problems)
    assert "s2_study: no study prediction, fallback 'negative 1 0 0 1 1'" in text
    assert "i1_image: dropped 1 box(es): box 1: no area" in text
    assert "i3_image: bad image prediction ('none' probability missing)" in text
    assert "1 study predictions have no row in the sample" in text and "s9" in text
    assert len(problems) == 4
    assert sub.attrs["n_fallback"] == {"study": 1, "image": 1}


def test_build_submission_without_image_predictions_and_with_sizes():
    sample = ["s1_study", "i1_image", "i2_image"]  # plain ids: default fallbacks
    sub, problems = build_submission(sample, None, None)
    assert sub["PredictionString"].tolist() == [DEFAULT_STUDY, DEFAULT_IMAGE, DEFAULT_IMAGE]
    assert problems == ["no study predictions given: all 1 study rows use the fallback",
                        "no image predictions given: all 2 image rows use the fallback"]
    image = pd.DataFrame({"image_id": ["i1", "i2"], "boxes": [[[-3, 0, 99, 20, 0.5]], [[70, 0, 90, 20, 0.5]]],
                          "none": [0.5, 0.5]})
    sub, problems = build_submission(sample, None, image, image_sizes={"i1": (48, 64), "i2": (48, 64)})
    assert sub["PredictionString"].tolist()[1:] == ["opacity 0.5 0 0 64 20 none 0.5 0 0 1 1", "none 0.5 0 0 1 1"]
    assert any(p.startswith("i2_image: dropped 1 box(es)") for p in problems)


# --- validation on DICOMs -----------------------------------------------------------------


def test_image_sizes_from_headers_and_unreadable_file(mini):
    bad = mini / "test" / "stC" / "seC" / "c1.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a dicom at all")
    sizes, problems = read_image_sizes(mini / "test", ["a1", "b1", "c1", "zz"], progress=False)
    assert sizes == {"a1": (48, 64), "b1": (64, 48)}
    assert len(problems) == 2
    assert "c1.dcm: cannot read Rows/Columns" in problems[1] and "image zz: no DICOM" in problems[0]


def test_valid_submission_passes(mini, tmp_path, capsys):
    sub = write_sub(tmp_path / "submission.csv", good_rows())
    assert validate_submission(sub, mini) == []
    assert cli_validate([str(sub), "--data", str(mini)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {sub}: 5 rows (2 study, 3 image)")


def test_every_problem_is_reported(mini, tmp_path, capsys):
    bad = mini / "test" / "stC" / "seC" / "c1.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * 10)
    sample = pd.read_csv(mini / "sample_submission.csv")
    pd.concat([sample, pd.DataFrame({"id": ["c1_image", "stC_study"], "PredictionString": [DEFAULT_IMAGE, DEFAULT_STUDY]})]
              ).to_csv(mini / "sample_submission.csv", index=False)
    body = [
        "stA_study,negative 0.5 0 0 1 1 typical 1.5 0 0 1 1 negative 0.1 0 0 1 1",  # conf > 1, repeated label
        "stA_study,negative 0.5 0 0 1 1",  # duplicate id
        "stB_study,opacity 0.5 0 0 1 1 typical 0.5 0 0 2 2",  # unknown label for a study row
        "a1_image,opacity 0.5 10 10 5 20 opacity 0.4 0 0 64 49 none 0.5 0 0 2 1",  # x0>x1, outside, none box
        "b1_image,opacity 0.5 0 0 1",  # 5 tokens
        "b2_image,",  # empty
        "c1_image,none nan 0 0 1 1",  # non-finite; its DICOM is unreadable
        "x9_image,none 1 0 0 1 1",  # unknown id
        "x9_study,none,1",  # 3 fields
    ]
    sub = tmp_path / "bad.csv"
    sub.write_text("Id,PredictionString\n" + "\n".join(body) + "\n")
    assert cli_validate([str(sub), "--data", str(mini)]) == 1
    out = capsys.readouterr().out
    expected = [
        "line 1: header 'Id,PredictionString' must be exactly",
        "line 10: 3 fields",
        "line 3: id stA_study repeats line 2",
        "line 9: id 'x9_image' is not in sample_submission.csv",
        "missing id stC_study",
        "c1.dcm: cannot read Rows/Columns",
        "line 2 (stA_study): group 2 (typical): confidence 1.5 outside [0, 1]",
        "line 2 (stA_study): label 'negative' appears 2 times",
        "line 4 (stB_study): group 1: unknown label 'opacity'",
        "line 5 (a1_image): group 1 (opacity): box 10 10 5 20 needs x0 < x1",
        "line 5 (a1_image): group 2 (opacity): box 0 0 64 49 outside the 48x64 (HxW) image",
        "line 5 (a1_image): group 3 (none): box must be 0 0 1 1",
        "line 6 (b1_image): 5 tokens",
        "line 7 (b2_image): empty PredictionString",
        "line 8 (c1_image): group 1: conf 'nan' is not finite",
        "line 10: id 'x9_study' is not in sample_submission.csv",
        "line 10 (x9_study): 1 tokens",  # the split line's first two fields are still checked
    ]
    for needle in expected:
        assert needle in out, needle
    assert f"{len(expected)} problem(s)" in out and f"{len(expected):4d}. " in out


def test_make_submission_end_to_end(mini, tmp_path, capsys):
    study = tmp_path / "study.csv"
    pd.DataFrame({"study_id": ["stA"], "negative": [0.2], "typical": [0.5], "indeterminate": [0.2],
                  "atypical": [0.1]}).to_csv(study, index=False)
    image = tmp_path / "image.csv"
    pd.DataFrame({"image_id": ["a1", "b1", "b2"],
                  "boxes": [json.dumps([[1, 1, 80, 47, 0.7]]), "[]", json.dumps([[3, 4, 20, 30, 0.4]])],
                  "none": [0.2, 0.9, 0.5]}).to_csv(image, index=False)
    out = tmp_path / "out" / "submission.csv"
    args = ["--data", str(mini), "--study", str(study), "--image", str(image), "--out", str(out)]
    assert cli_make(args) == 0
    printed = capsys.readouterr().out
    assert "5 rows (2 study, 3 image); fallback rows: 1 study, 0 image; 1 problem(s)" in printed
    assert "stB_study: no study prediction" in printed
    sub = pd.read_csv(out)
    assert sub.loc[sub.id == "a1_image", "PredictionString"].item() == "opacity 0.7 1 1 64 47 none 0.2 0 0 1 1"
    assert validate_submission(out, mini) == []  # clipped to the 48x64 image read from its header
    assert cli_make(args + ["--strict"]) == 1 and out.is_file()


def test_split_ids_strips_suffixes_and_skips_unknown():
    assert split_ids(["s1_study", "i1_image", "odd", "s2_study"]) == (["s1", "s2"], ["i1"])


def test_unreadable_submission_names_the_file(tmp_path):
    p = tmp_path / "sub.csv"
    p.write_text("")
    with pytest.raises(SubmissionError, match=r"sub\.csv: not a readable CSV"):
        read_submission(p)
    p.write_text('id,PredictionString\na_study,"negative 1 0 0 1 1\n')  # unclosed quote
    with pytest.raises(SubmissionError, match=r"sub\.csv: not a readable CSV"):
        read_submission(p)


def test_make_submission_bad_input_file_is_named(mini, tmp_path):
    image = tmp_path / "image.csv"
    pd.DataFrame({"image_id": ["a1"], "boxes": ["[]"]}).to_csv(image, index=False)  # no 'none' column
    with pytest.raises(UserError, match=r"image\.csv: missing columns \['none'\]"):
        cli_make(["--data", str(mini), "--image", str(image), "--out", str(tmp_path / "s.csv")])
    with pytest.raises(UserError, match=r"nope\.csv: not found"):
        cli_make(["--data", str(mini), "--study", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "s.csv")])
    assert not (tmp_path / "s.csv").exists()


def test_validate_numbers_file_lines_and_needs_no_data_folder_for_row_checks(tmp_path):
    rows = {**good_rows(), "a1_image": "opacity 0.5 30 10 20 40 none 1.5 0 0 1 1", "b2_image": ""}
    sub = write_sub(tmp_path / "s.csv", rows)
    problems = validate_submission(sub, None)  # the row checks alone, as score runs them without --data
    assert problems == [
        "line 4 (a1_image): group 1 (opacity): box 30 10 20 40 needs x0 < x1 and y0 < y1",
        "line 4 (a1_image): group 2 (none): confidence 1.5 outside [0, 1]",
        "line 6 (b2_image): empty PredictionString",
    ]


def test_validate_wrong_paths_are_one_line_user_errors(mini, tmp_path):
    sub = write_sub(tmp_path / "s.csv", good_rows())
    with pytest.raises(UserError, match="nope.csv: no such file"):
        cli_validate([str(tmp_path / "nope.csv"), "--data", str(mini)])
    with pytest.raises(UserError, match="no such folder"):
        cli_validate([str(sub), "--data", str(tmp_path / "nowhere")])


def test_write_submission_fills_the_sample_and_creates_folders(mini, tmp_path):
    study = pd.DataFrame({"study_id": ["stA"], **{c: [0.25] for c in STUDY_CLASSES}})
    out = tmp_path / "new" / "dir" / "submission.csv"
    sub, problems = write_submission(mini, study, None, out)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written["id"]) == ["stA_study", "stB_study", "a1_image", "b1_image", "b2_image"]
    assert written.equals(sub.astype(str))
    assert written.loc[0, "PredictionString"] == format_study_prediction([0.25] * 4)
    assert written.loc[1, "PredictionString"] == DEFAULT_STUDY  # no prediction: the fallback
    assert validate_submission(out, mini) == []
