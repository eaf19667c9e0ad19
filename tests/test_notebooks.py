"""Notebooks stay thin and in sync: the .py (jupytext percent) is the source, the .ipynb is
what Kaggle pushes; both must agree, start with a parameters cell and share one bootstrap."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.py"))
BOOTSTRAP_DOC = (ROOT / "docs" / "notebooks.md").read_text()


def _code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_matches_its_source(src):
    import jupytext

    ipynb = src.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make notebooks`"
    expected = _code_cells(json.loads(jupytext.writes(jupytext.read(src), fmt="ipynb")))
    actual = _code_cells(json.loads(ipynb.read_text()))
    assert actual == expected, f"{ipynb.name} is stale: run `make notebooks`"


@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_parameters_first_then_bootstrap(src):
    nb = json.loads(src.with_suffix(".ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "first code cell must be tagged parameters"
    # parameters cell: assignments and comments only, so papermill overrides are the whole story
    for line in "".join(code[0]["source"]).splitlines():
        assert not line.strip() or line.lstrip().startswith("#") or re.match(r"^\w+\s*=", line), line
    # the one line that differs: the bootstrap names its kernel (what it installs from the wheels)
    boot = "".join(code[1]["source"]).strip().replace(f'prepare_kernel("{src.stem}")', 'prepare_kernel("<notebook>")')
    doc_boot = re.search(r"```python\n# %%\n(.*?)```", BOOTSTRAP_DOC, re.S).group(1).strip()
    # the wheels kernel cannot install wheels it has not built yet: it stops before that line
    assert doc_boot.startswith(boot), f"{src.name}: bootstrap cell differs from docs/notebooks.md"


@pytest.mark.parametrize("name, schema", [("preprocess", "siimcovid.preprocess.convert:PreprocessConfig"),
                                          ("inference", "siimcovid.inference:InferConfig")])
def test_notebook_parameters_are_config_fields_or_documented_aliases(name, schema):
    """A parameter is the config field of the same name (what --set takes), or a row of the table in
    docs/notebooks.md that says which option it maps to and why the names differ."""
    import dataclasses
    import importlib

    module, cls = schema.split(":")
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    table = re.search(r"## Notebook parameters and command-line options\n(.*?)(\n## |\Z)", BOOTSTRAP_DOC, re.S).group(1)
    aliases = dict(re.findall(r"^\| `(\w+)` \| (`--[^|]+)\|", table, re.M))
    assert {"data_dir", "out_dir", "sizes", "n_folds", "overrides"} <= set(aliases)
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    params = re.findall(r"^(\w+)\s*=", "".join(nb["cells"][0]["source"] if nb["cells"][0]["cell_type"] == "code"
                                                else next(c for c in nb["cells"] if c["cell_type"] == "code")["source"]), re.M)
    unknown = [p for p in params if p not in fields and p not in aliases and p != "config"]
    assert not unknown, f"notebooks/{name}: parameters neither config fields nor in docs/notebooks.md's table: {unknown}"


@pytest.fixture(scope="session")
def tiny_competition(tmp_path_factory):
    """A 30-study synthetic competition folder at 1/16 size, shared by the notebook runs."""
    from siimcovid.dev.synthetic import cli as synth

    d = tmp_path_factory.mktemp("competition")
    assert synth(["--out", str(d), "--studies", "30", "--seed", "3", "--scale", "0.0625", "--no-progress"]) == 0
    return d


def _papermill(name, run_dir, **params):
    import papermill as pm

    return pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(run_dir / f"{name}.out.ipynb"),
                               parameters=params, cwd=str(run_dir), progress_bar=False, kernel_name="python3")


@pytest.fixture(scope="session")
def preprocessed(tiny_competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    _papermill("preprocess", out, data_dir=str(tiny_competition), out_dir=str(out / "pre"), sizes=[64],
               workers=1, n_folds=2)
    return out / "pre"


def test_preprocess_notebook_runs_under_papermill(preprocessed, tiny_competition):
    import pandas as pd

    meta = pd.read_csv(preprocessed / "meta.csv")
    n_dicoms = len(list(tiny_competition.rglob("*.dcm")))
    errors = pd.read_csv(preprocessed / "errors.csv")
    assert len(meta) + len(errors) == n_dicoms and len(errors) == 0
    assert set(meta["split"]) == {"train", "test"}
    for r in meta.itertuples():
        assert (preprocessed / "images" / "64" / r.split / f"{r.image_id}.png").exists()
    nb = json.loads((preprocessed.parent / "preprocess.out.ipynb").read_text())
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook should show its example grid"


def test_train_study_notebook_trains_two_folds_and_merges(preprocessed, tmp_path):
    import pandas as pd

    work = tmp_path / "study"
    _papermill("train-study", tmp_path, config="tiny_cpu", folds=[0, 1], preprocess=str(preprocessed),
               workdir=str(work), make_tiny_hub=str(tmp_path / "tiny_hub"), merge=True,
               overrides={"epochs": 1, "steps_per_epoch": 2, "verbose": 0})
    exp = work / "tiny_cpu"
    for k in (0, 1):
        assert (exp / f"fold{k}" / "best.weights.h5").exists()
        oof = pd.read_csv(exp / f"fold{k}" / "oof.csv")
        assert set(oof["fold"]) == {k}
    test = pd.read_csv(exp / "test_study.csv")
    meta = pd.read_csv(preprocessed / "meta.csv")
    assert set(test["study_id"]) == set(meta.loc[meta["split"] == "test", "study_id"])
    assert list(test.columns) == ["study_id", "negative", "typical", "indeterminate", "atypical"]
    scores = json.loads((exp / "scores.json").read_text())
    assert scores["n_folds"] == 2 and scores["n_oof_studies"] == meta.loc[meta["split"] == "train", "study_id"].nunique()
    assert 0.0 <= scores["oof_study_map"] <= 1.0 and 0.0 <= scores["oof_study_map_tta"] <= 1.0
    assert set(scores["ap"]) == {"negative", "typical", "indeterminate", "atypical"} and not scores["problems"]


def test_train_study_notebook_trains_the_sm_fpn_aux_model(preprocessed, tmp_path):
    """The same notebook with the segmentation-models FPN (EfficientNet-B0 encoder) and its mask loss."""
    import pandas as pd

    work = tmp_path / "study"
    _papermill("train-study", tmp_path, config="tiny_fpn_cpu", fold=1, preprocess=str(preprocessed),
                    workdir=str(work), overrides={"epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "verbose": 0})
    d = work / "tiny_fpn_cpu" / "fold1"
    history = pd.read_csv(d / "history.csv")
    assert {"cls_loss", "seg_loss"} <= set(history.columns), history.columns.tolist()
    assert np.isfinite(history[["cls_loss", "seg_loss"]].to_numpy()).all()
    assert json.loads((d / "config.json").read_text())["model"] == "sm_fpn"
    assert set(pd.read_csv(d / "oof.csv")["fold"]) == {1}


def test_train_binary_notebook_trains_two_folds_and_merges(preprocessed, tmp_path):
    """The binary `none` notebook: one member (tiny hub, random init) on both folds, then binary-merge."""
    import pandas as pd

    work = tmp_path / "binary"
    _papermill("train-binary", tmp_path, members=["tiny_cpu"], folds=[0, 1], preprocess=str(preprocessed),
               workdir=str(work), make_tiny_hub=str(tmp_path / "tiny_hub"), merge=True,
               overrides={"epochs": 1, "steps_per_epoch": 1, "verbose": 0})
    meta = pd.read_csv(preprocessed / "meta.csv")
    for k in (0, 1):
        oof = pd.read_csv(work / "tiny_cpu" / f"fold{k}" / "oof.csv")
        assert set(oof["fold"]) == {k} and {"p_none", "p_none_tta", "has_box"} <= set(oof.columns)
    oof = pd.read_csv(work / "oof_binary.csv")
    assert len(oof) == (meta["split"] == "train").sum()  # every train image, dropped extra views too
    test = pd.read_csv(work / "test_binary.csv")
    assert set(test["image_id"]) == set(meta.loc[meta["split"] == "test", "image_id"])
    scores = json.loads((work / "scores.json").read_text())
    assert 0.0 <= scores["none_ap"]["tiny_cpu"] <= 1.0 and scores["method"] == "single" and not scores["problems"]


def test_preprocess_external_notebook_converts_every_source(tmp_path):
    """The preprocess-external kernel: every source of the fixture sets in its own folder, the
    duplicates of the competition pictures left out, the settings of one source overridden."""
    import pandas as pd

    from siimcovid.dev.external_sets import write_all

    sets = write_all(tmp_path / "sets")
    out = tmp_path / "ext"
    _papermill("preprocess-external", tmp_path, out_dir=str(out), sizes=[64], exclude_like=str(sets["like"]),
               src_dirs={s: str(sets[s]) for s in ("rsna", "vinbigdata", "nih", "chexpert")},
               overrides={"chexpert": {"uncertain": "ignore"}})
    for source in ("rsna", "vinbigdata", "nih", "chexpert"):
        meta = pd.read_csv(out / source / "meta.csv")
        errors = pd.read_csv(out / source / "errors.csv")
        assert set(meta["source"]) == {source} and "duplicate" in set(errors["stage"])
    chex = pd.read_csv(out / "chexpert" / "meta.csv").set_index("image_id")
    assert chex.loc["patient00003_study1_view1_frontal", "opacity"] == -1
