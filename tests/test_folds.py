import hashlib
import subprocess
import sys

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


def _patients_table(n_patients=400, seed=7):
    """A competition-like table: 1-3 studies per patient, the train set's class shares. Drawn with
    numpy's legacy RandomState, whose stream numpy keeps fixed, so the table is the same in every venv."""
    rng = np.random.RandomState(seed)
    rows = []
    for p, size in enumerate(rng.choice([1, 2, 3], size=n_patients, p=[0.6, 0.3, 0.1])):
        for _ in range(size):
            rows.append((f"s{len(rows):05d}", int(rng.choice(4, p=[0.27, 0.47, 0.17, 0.09])), f"p{p:04d}"))
    return pd.DataFrame(rows, columns=["study_id", "label", "patient_id"])


def test_folds_are_balanced_per_class_on_a_realistic_table():
    f = folds.make_folds(_patients_table(), n_folds=5, seed=42)
    assert (f.groupby("group")["fold"].nunique() == 1).all()
    counts = f.groupby(["label", "fold"]).size().unstack(fill_value=0)
    assert counts.shape == (4, 5)
    spread = (counts.max(axis=1) - counts.min(axis=1)).to_dict()
    assert max(spread.values()) <= 2, counts  # scikit-learn 1.6.1 split label 0 as [11, 12, 11, 10, 5]


# The assignment of _patients_table() with seed 42 (study_id,fold lines): it must not move with a
# library's release (scikit-learn 1.6.1 on Kaggle's image and 1.9.1 locally split differently);
# a deliberate change of the algorithm changes this hash and the demo's folds with it.
GOLDEN_FOLDS_SHA256 = "b8e2445ebe734779ae8cff5d0c452e659b08bbd26f0dddf80099df5d1e55eaaa"


def test_fold_assignment_is_stable_golden_hash():
    f = folds.make_folds(_patients_table(), n_folds=5, seed=42)
    text = "\n".join(f"{s},{k}" for s, k in zip(f["study_id"], f["fold"]))
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN_FOLDS_SHA256


def test_fold_assignment_does_not_use_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"  # any import of sklearn now raises ImportError
            "from siimcovid import folds; import pandas as pd\n"
            "st = pd.DataFrame({'study_id': list('abcdef'), 'label': [0, 1, 0, 1, 0, 1]})\n"
            "print(sorted(folds.make_folds(st, n_folds=3, patient_col=None)['fold'].tolist()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[0, 0, 1, 1, 2, 2]"


def test_fewer_groups_than_folds_give_one_fold_per_group():
    st = pd.DataFrame({"study_id": ["a", "b", "c"], "label": [0, 0, 1], "patient_id": ["p", "q", "r"]})
    f = folds.make_folds(st, n_folds=5, allow_fewer=True)
    assert sorted(f["fold"]) == [0, 1, 2]


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
