"""The prediction tables' owner: kinds, the one reader per kind and its errors, the detector writer."""
import numpy as np
import pandas as pd
import pytest

from siimcovid import tables as TB


def _study(path, tta=True, **extra):
    cols = {c: [0.25, 0.25] for c in TB.PROB_COLS}
    if tta:
        cols.update({c: [0.1, 0.7] for c in TB.TTA_COLS})
    pd.DataFrame({"image_id": ["001", "002"], "study_id": ["s1", "s1"], **cols, **extra}).to_csv(path, index=False)
    return path


def _binary(path, **over):
    cols = {"image_id": ["a", "b"], "study_id": ["s", "s"], "p_none": [0.2, 0.9], "has_box": [1, 0], **over}
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


def test_kind_is_read_from_the_columns():
    assert TB.kind_of(["image_id", *TB.PROB_COLS]) == "study"
    assert TB.kind_of(["image_id", "p_none"]) == "binary"
    assert TB.kind_of(TB.DET_COLUMNS) == "detect"
    assert TB.kind_of(["image_id", "boxes"]) is None


def test_study_reader_keeps_ids_as_text_and_fills_missing_tta(tmp_path):
    df = TB.read_study(_study(tmp_path / "oof.csv", tta=False))
    assert list(df["image_id"]) == ["001", "002"]  # not the numbers 1 and 2
    np.testing.assert_allclose(df[TB.TTA_COLS].to_numpy(), df[TB.PROB_COLS].to_numpy())
    df = TB.read("study", _study(tmp_path / "t.csv"))
    assert df[TB.TTA_COLS[0]].tolist() == [0.1, 0.7]  # present TTA columns are kept
    (tmp_path / "bad.csv").write_text("image_id,study_id\nx,y\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['p_atypical'.*study prediction table"):
        TB.read_study(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: unreadable CSV"):
        TB.read_study(tmp_path / "empty.csv")


def test_binary_reader_checks_values_truth_and_repeats(tmp_path):
    df = TB.read_binary(_binary(tmp_path / "ok.csv"), truth=True)
    assert df["p_none_tta"].tolist() == [0.2, 0.9]  # filled from p_none
    pd.DataFrame({"image_id": ["a"], "study_id": ["s"], "p_none": [0.5]}).to_csv(tmp_path / "no_truth.csv", index=False)
    with pytest.raises(ValueError, match=r"no_truth\.csv: missing columns \['has_box'\]"):
        TB.read_binary(tmp_path / "no_truth.csv", truth=True)
    assert len(TB.read_binary(tmp_path / "no_truth.csv")) == 1  # a test table needs no truth
    with pytest.raises(ValueError, match=r"range\.csv: predictions missing or outside \[0, 1\]"):
        TB.read_binary(_binary(tmp_path / "range.csv", p_none=[0.2, 1.5]))
    with pytest.raises(ValueError, match=r"nan\.csv: predictions missing"):
        TB.read_binary(_binary(tmp_path / "nan.csv", p_none=[0.2, None]))
    with pytest.raises(ValueError, match=r"hb\.csv: has_box must be 0 or 1"):
        TB.read_binary(_binary(tmp_path / "hb.csv", has_box=[1, 2]), truth=True)
    with pytest.raises(ValueError, match=r"dup\.csv: image a repeats"):
        TB.read_binary(_binary(tmp_path / "dup.csv", image_id=["a", "a"]))
    with pytest.raises(ValueError, match=r"nostudy\.csv: missing columns \['study_id'\]"):
        pd.DataFrame({"image_id": ["a"], "p_none": [0.5]}).to_csv(tmp_path / "nostudy.csv", index=False)
        TB.read_binary(tmp_path / "nostudy.csv")


def test_detector_tables_round_trip_and_bad_cells_are_named(tmp_path):
    boxes = np.array([[10.04, 20.0, 110.0, 220.0, 0.912345678], [1, 2, 3, 4, 0.1]])
    rows = [{"image_id": "007", "orig_h": 1000, "orig_w": 800, "boxes": boxes, "boxes_notta": []}]
    path = TB.write_detector(rows, tmp_path / "oof.csv")
    assert not (tmp_path / "oof.tmp").exists()
    df = TB.read("detect", path)
    assert df["image_id"].tolist() == ["007"]
    np.testing.assert_allclose(df["boxes"][0], [[10.0, 20.0, 110.0, 220.0, 0.91235], [1, 2, 3, 4, 0.1]])
    assert df["boxes_notta"][0].shape == (0, 5)
    pd.DataFrame({"image_id": ["x"], "orig_h": [1], "orig_w": [1], "boxes": ["[[1, 2]]"], "boxes_notta": ["[]"]}
                 ).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: column boxes: boxes must be \(N, 5\)"):
        TB.read_detector(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=r"detector prediction table"):
        TB.read_detector(_binary(tmp_path / "b.csv"))
    with pytest.raises(ValueError, match="kind 'nope'"):
        TB.read("nope", path)
