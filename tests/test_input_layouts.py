"""Inputs are found in the flat (/kaggle/input/<slug>) and the nested layouts (competitions/,
datasets/<owner>/, notebooks/<user>/, models/<owner>/<model>/<framework>/<variation>/<version>),
six levels deep, without walking a competition's DICOM tree."""
from __future__ import annotations

from pathlib import Path

import pytest

from siimcovid import paths

NESTED = {
    "competition": ("competitions/siim-covid19-detection", "sample_submission.csv"),
    "dataset": ("datasets/alice/siimcovid-utils", "siimcovid/__init__.py"),
    "notebook": ("notebooks/alice/siimcovid-preprocess", "meta.csv"),
    "model": ("models/google/efficientnet-v2/tensorFlow2/imagenet21k-ft1k-l-feature-vector/2", "saved_model.pb"),
}
FLAT = {
    "competition": ("siim-covid19-detection", "sample_submission.csv"),
    "dataset": ("siimcovid-utils", "siimcovid/__init__.py"),
    "notebook": ("siimcovid-preprocess", "meta.csv"),
    "model": ("efficientnet-v2/tensorflow2/imagenet21k-ft1k-l-feature-vector/2", "saved_model.pb"),
}


def mount(root: Path, layout: dict) -> Path:
    """A Kaggle-shaped input folder; the competition gets a DICOM tree and its CSVs."""
    for folder, marker in layout.values():
        f = root / folder / marker
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    comp = root / layout["competition"][0]
    (comp / "train_study_level.csv").write_text("id\n")
    for split in ("train", "test"):
        for s in range(3):
            series = comp / split / f"study{s}" / "series0"
            series.mkdir(parents=True)
            (series / "img0.dcm").write_bytes(b"")
    return root


@pytest.mark.parametrize("layout", [NESTED, FLAT], ids=["nested", "flat"])
@pytest.mark.parametrize("kind", list(NESTED))
def test_each_kind_is_found_in_both_layouts(tmp_path, monkeypatch, layout, kind):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    root = mount(tmp_path / "input", layout)
    folder, marker = layout[kind]
    assert paths.find_input(marker, hint=root) == root / folder


def test_model_version_folder_is_six_levels_deep(tmp_path):
    root = mount(tmp_path / "input", NESTED)
    folder = NESTED["model"][0]
    assert len(Path(folder).parts) == 6
    assert root / folder in [Path(d) for d, _, _ in paths.walk_inputs(root)]
    assert root / folder not in [Path(d) for d, _, _ in paths.walk_inputs(root, max_depth=5)]


def test_the_dicom_tree_is_never_walked(tmp_path, monkeypatch):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    root = mount(tmp_path / "input", NESTED)
    comp = root / NESTED["competition"][0]
    visited = [Path(d) for d, _, _ in paths.walk_inputs(root)]
    assert comp in visited
    assert not [d for d in visited if comp / "train" in d.parents or d == comp / "train"], "DICOM tree walked"
    # a marker hidden inside the DICOM tree is out of reach: the search does not go there
    (comp / "train" / "study0" / "series0" / "meta.csv").write_text("x")
    assert paths.find_input("meta.csv", hint=root) == root / NESTED["notebook"][0]
    # a folder holding .dcm files (no competition CSV beside it) is not descended either
    loose = root / "datasets" / "bob" / "dicoms"
    (loose / "a" / "deeper").mkdir(parents=True)
    (loose / "a" / "x.dcm").write_bytes(b"")
    visited = [Path(d) for d, _, _ in paths.walk_inputs(root)]
    assert loose / "a" in visited and loose / "a" / "deeper" not in visited


@pytest.mark.parametrize("layout", [NESTED, FLAT], ids=["nested", "flat"])
def test_notebook_bootstrap_finds_the_package_without_walking_dicoms(tmp_path, layout):
    """The bootstrap cell (docs/notebooks.md) runs before the package is importable: its search,
    run against a mounted input folder, finds the utils dataset at fixed depths."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "notebooks.md").read_text()
    cell = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    search = "\n".join(line[4:] for line in cell.splitlines() if line.startswith(("    pats", "    hits")))
    assert search.count("\n") == 1 and "**" not in search.split("#")[0]
    root = mount(tmp_path / "input", layout)
    ns = {"glob": __import__("glob")}
    exec(search.replace('"/kaggle/input/"', repr(f"{root}/")), ns)
    assert ns["hits"] == [str(root / layout["dataset"][0] / "siimcovid" / "__init__.py")]
