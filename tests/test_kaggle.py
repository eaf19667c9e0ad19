import json

import pytest

from siimcovid.kaggle import render as kaggle
from siimcovid.errors import UserError


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


def test_internet_is_explicit_and_off_except_the_fetching_kernels(kernels):
    for k in kernels:
        # the client defaults enable_internet to TRUE when the key is missing
        assert isinstance(k.metadata["enable_internet"], bool)
        assert k.metadata["enable_internet"] is (k.template in ("wheels", "weights")), k.slug


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


def test_tf_training_kernels_are_gpu_by_default_and_every_flag_is_written(kernels):
    for k in kernels:
        m = k.metadata
        for key in ("enable_internet", "enable_gpu", "enable_tpu"):
            assert isinstance(m[key], bool), (k.slug, key)
        if k.template == "train-study-fold":
            # Kaggle's TPU image ships tensorflow-cpu: TPU only as an explicit choice
            assert (m["enable_gpu"], m["enable_tpu"], m["machine_shape"]) == (True, False, "NvidiaTeslaT4")
            assert "TpuV5E8" in k.accelerators
    by = {k.slug: k for k in kernels}
    # mmcv's CUDA ops are compiled in the wheels kernel: a GPU session like the kernels using them
    assert by["siimcovid-wheels"].metadata["enable_gpu"] is True
    assert by["siimcovid-preprocess"].accelerator == "CPU"


def test_accelerator_applies_only_to_the_kernels_meant_for_it(kernels):
    chosen = kaggle.choose([kaggle.Kernel(k.slug, dict(k.metadata), k.notebook, k.params, k.template, k.accelerators)
                            for k in kernels], accelerator="NvidiaL4")
    for k in chosen:
        if k.template in ("train-study-fold", "train-binary-fold"):
            assert k.metadata["machine_shape"] == "NvidiaL4" and k.metadata["enable_gpu"] is True
        else:
            assert k.metadata == next(o.metadata for o in kernels if o.slug == k.slug), k.slug
    with pytest.raises(UserError, match="no kernel takes --accelerator NvidiaP100"):
        kaggle.choose(kaggle.expand(kaggle.load_templates(), "alice"), accelerator="NvidiaP100")


def test_tpu_is_explicit_and_needs_an_image(kernels):
    with pytest.raises(UserError, match="needs --docker-image"):
        kaggle.choose(kaggle.expand(kaggle.load_templates(), "alice"), accelerator="TpuV5E8")
    ks = kaggle.choose(kaggle.expand(kaggle.load_templates(), "alice"), accelerator="TpuV5E8",
                       docker_image="gcr.io/me/tf-tpu:1")
    for k in ks:
        m = k.metadata
        if k.template == "train-study-fold":
            assert (m["enable_tpu"], m["enable_gpu"], m["machine_shape"]) == (True, False, "TpuV5E8")
            kaggle.check_metadata(k.template, m)
        else:
            assert m["enable_tpu"] is False


def test_docker_image_goes_to_every_kernel_sharing_the_wheels():
    ks = kaggle.choose(kaggle.expand(kaggle.load_templates(), "alice"), docker_image="gcr.io/kaggle-gpu-images/python:v1")
    for k in ks:
        assert k.uses_wheels, k.slug  # today every kernel installs the wheels kernel's output
        assert k.metadata["docker_image"] == "gcr.io/kaggle-gpu-images/python:v1"
        assert k.metadata["docker_image_pinning_type"] in kaggle.PINNING_TYPES


def test_metadata_the_client_would_refuse_is_rejected():
    base = {"_render": {"notebook": "n.ipynb"}, "id": "{user}/x", "title": "xxxxx", "code_file": "n.ipynb",
            "language": "python", "kernel_type": "notebook", "enable_internet": False, "enable_gpu": True,
            "enable_tpu": False}
    kaggle.expand({"x": {**base, "docker_image": "img", "docker_image_pinning_type": "latest"}}, "u")  # accepted now
    with pytest.raises(ValueError, match="docker_image_pinning_type"):
        kaggle.expand({"x": {**base, "docker_image_pinning_type": "newest"}}, "u")
    with pytest.raises(ValueError, match="missing keys \\['enable_internet'\\]"):
        kaggle.expand({"x": {k: v for k, v in base.items() if k != "enable_internet"}}, "u")
    with pytest.raises(ValueError, match="both true"):
        kaggle.expand({"x": {**base, "enable_tpu": True}}, "u")
    with pytest.raises(ValueError, match="disagrees"):
        kaggle.expand({"x": {**base, "machine_shape": "TpuV5E8"}}, "u")


def test_render_without_user_is_a_user_error(tmp_path, monkeypatch, capsys):
    from siimcovid.__main__ import main

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    out = tmp_path / "k"
    assert main(["kaggle", "render", "--out", str(out)]) == 2
    assert "pass --user USER" in capsys.readouterr().err and not out.exists()
    assert main(["kaggle", "render", "--out", str(out), "--placeholder-user"]) == 0
    meta = json.loads((out / "kernels" / "siimcovid-wheels" / "kernel-metadata.json").read_text())
    assert meta["id"] == "KAGGLE_USER/siimcovid-wheels"
    assert "user KAGGLE_USER (from --placeholder-user" in capsys.readouterr().err
    assert main(["kaggle", "render", "--out", str(out), "--user", "bob"]) == 0
    meta = json.loads((out / "kernels" / "siimcovid-train-study-fold-2" / "kernel-metadata.json").read_text())
    assert meta["id"] == "bob/siimcovid-train-study-fold-2" and meta["enable_internet"] is False
    assert f"{out / 'kernels' / 'siimcovid-train-study-fold-2'}  (bob/siimcovid-train-study-fold-2" \
        in capsys.readouterr().out
    assert main(["kaggle", "dataset", "--out", str(out), "--user", "bob"]) == 0
    staged = json.loads((out / "siimcovid-utils" / "dataset-metadata.json").read_text())
    assert staged["id"] == "bob/siimcovid-utils" and "datasets create -p" in capsys.readouterr().out
