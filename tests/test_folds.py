import numpy as np
import pandas as pd
import pytest

from siimcovid import folds


def _studies(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=n, p=[0.28, 0.47, 0.17, 0.08])
    patients = [f"p{i // 2}" for i in range(n)]  # two studies per patient
    return pd.DataFrame({"study_id": [f"s{i:04d}" for i in range(n)], "label": labels, "patient_id": patients})


def test_folds_grouped_stratified_deterministic(tmp_path):
    st = _studies()
    f1 = folds.make_folds(st, n_folds=5, seed=1)
    f2 = folds.make_folds(st, n_folds=5, seed=1)
    assert f1.equals(f2)
    assert set(f1["fold"]) == set(range(5))
    # a patient never spans two folds
    assert (f1.groupby("group")["fold"].nunique() == 1).all()
    # every class is spread over the folds roughly in proportion
    counts = f1.groupby(["label", "fold"]).size().unstack(fill_value=0)
    for label, row in counts.iterrows():
        assert row.max() - row.min() <= max(3, 0.5 * row.mean()), (label, row.tolist())
    f3 = folds.make_folds(st, n_folds=5, seed=2)
    assert not f1["fold"].equals(f3["fold"])
    p = folds.save_folds(f1, tmp_path / "folds.csv")
    back = folds.read_folds(p)
    assert back["fold"].tolist() == f1["fold"].tolist()


def test_folds_without_patients_group_by_study():
    st = _studies().drop(columns="patient_id")
    f = folds.make_folds(st, n_folds=3, seed=0, patient_col=None)
    assert (f["group"] == f["study_id"]).all()


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill 5 folds"):
        folds.make_folds(_studies(n=6), n_folds=5)


def test_unreadable_dicom_header_is_recorded_not_fatal(tmp_path):
    pytest.importorskip("pydicom")
    from siimcovid.dev.synthetic import write_dicom

    good = write_dicom(tmp_path / "s" / "r" / "good.dcm", np.zeros((8, 8), np.uint16), study_id="s",
                       series_id="r", image_id="good", patient_id="p42")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom")
    problems = []
    assert folds.read_patient_ids([str(bad), str(good)], problems) == ["", "p42"]
    assert len(problems) == 1 and "bad.dcm: cannot read PatientID" in problems[0]


def test_split_fold_is_the_one_split_of_a_preprocess_table():
    meta = pd.DataFrame({"image_id": list("abcdef"), "split": ["train"] * 4 + ["test"] * 2,
                         "fold": [0, 1, 1, 0, -1, -1]})
    tr, va = folds.split_fold(meta, 1)
    assert list(tr["image_id"]) == ["a", "d"] and list(va["image_id"]) == ["b", "c"]  # test rows never
    assert list(tr.index) == [0, 1] and list(va.index) == [0, 1]
    with pytest.raises(folds.FoldSplitError, match="fold 7 not in meta.csv folds \\[0, 1\\]"):
        folds.split_fold(meta, 7)
    single = meta.assign(fold=-1)  # a set of a single patient group: preprocess writes fold -1
    with pytest.raises(ValueError, match="4 train images without a fold.*'a', 'b', 'c'.*single patient group"):
        folds.split_fold(single, 0)
    with pytest.raises(folds.FoldSplitError, match="without a fold"):
        folds.split_fold(meta.drop(columns="fold"), 0)
