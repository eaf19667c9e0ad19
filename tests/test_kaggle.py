import json

import pytest

from siimcovid import kaggle


@pytest.fixture(scope="module")
def kernels():
    return kaggle.expand(kaggle.load_templates(), user="alice")


def test_every_stage_and_fold_is_rendered(kernels):
    slugs = {k.slug for k in kernels}
    assert {f"siimcovid-train-study-fold-{k}" for k in range(5)} <= slugs
    assert {"siimcovid-preprocess", "siimcovid-wheels"} <= slugs
    for k in kernels:
        assert k.metadata["id"] == f"alice/{k.slug}"
        assert "{user}" not in json.dumps(k.metadata) and "{fold}" not in json.dumps(k.metadata), k.slug
        assert set(kaggle.REQUIRED_KEYS) <= set(k.metadata)


def test_internet_is_explicit_and_off_except_wheels(kernels):
    for k in kernels:
        # the client defaults enable_internet to TRUE when the key is missing
        assert isinstance(k.metadata["enable_internet"], bool)
        assert k.metadata["enable_internet"] is (k.template == "wheels"), k.slug


def test_sources_link_the_stages(kernels):
    by = {k.slug: k.metadata for k in kernels}
    assert "siim-covid19-detection" in by["siimcovid-preprocess"]["competition_sources"]
    for f in range(5):
        m = by[f"siimcovid-train-study-fold-{f}"]
        assert "alice/siimcovid-preprocess" in m["kernel_sources"]
        assert m["model_sources"] and m["model_sources"][0].count("/") == 4
    for m in by.values():
        assert "alice/siimcovid-utils" in m["dataset_sources"]


def test_fold_parameter_is_baked_into_each_notebook(tmp_path, kernels):
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "fold = 0\n", "outputs": [],
         "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    out = kaggle.inject_parameters(nb, {"fold": 3})
    src = out["cells"][0]["source"]
    ns = {}
    exec(src, ns)
    assert ns["fold"] == 3
    fold_kernels = [k for k in kernels if k.template == "train-study-fold"]
    assert sorted(k.params["fold"] for k in fold_kernels) == [0, 1, 2, 3, 4]


def test_missing_parameters_cell_is_a_clear_error(tmp_path):
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        kaggle.inject_parameters(nb, {"fold": 1})


def test_unknown_metadata_key_is_rejected():
    tpl = {"x": {"_render": {"notebook": "n.ipynb"}, "id": "{user}/x", "title": "x", "code_file": "n.ipynb",
                 "language": "python", "kernel_type": "notebook", "enable_internet": False, "gpu": True}}
    with pytest.raises(ValueError, match="unknown keys \\['gpu'\\]"):
        kaggle.expand(tpl, "u")


def test_build_wheels_dry_run_writes_marker(tmp_path):
    cmds = kaggle.build_wheels(tmp_path, dry_run=True)
    assert any("download" in c for c in cmds) and any("mmcv==2.1.0" in c for c in cmds)
    listed = (tmp_path / kaggle.WHEELS_MARKER).read_text().split()
    pins = kaggle.requirement_pins()
    for req in listed:  # the offline kernels get exactly the versions the local set-up pins
        name = req.split("==")[0].lower()
        assert pins[name] == req, req


def test_install_offline_wheels_is_noop_off_kaggle(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert kaggle.install_offline_wheels() is False


def test_dataset_dir_fills_user(tmp_path):
    d = kaggle.dataset_dir(tmp_path, "alice")
    meta = json.loads((d / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/siimcovid-utils" and 6 <= len(meta["title"]) <= 50
    assert (d / "siimcovid" / "__init__.py").exists()


def test_inference_kernel_is_offline_and_linked_to_its_inputs(kernels):
    by = {k.slug: k for k in kernels}
    k = by["siimcovid-inference"]
    m = k.metadata
    assert m["enable_internet"] is False and m["enable_gpu"] is True  # code competition: internet off
    assert m["competition_sources"] == ["siim-covid19-detection"]
    assert {f"alice/siimcovid-train-study-fold-{f}" for f in range(5)} <= set(m["kernel_sources"])
    assert {"alice/siimcovid-preprocess", "alice/siimcovid-wheels"} <= set(m["kernel_sources"])
    assert "alice/siimcovid-utils" in m["dataset_sources"]
    assert m["model_sources"] == by["siimcovid-train-study-fold-0"].metadata["model_sources"]
    assert k.notebook.name == m["code_file"] == "inference.ipynb" and k.notebook.exists()
    # every kernel source is itself one of the rendered kernels
    assert {s.split("/", 1)[1] for s in m["kernel_sources"]} <= set(by)
