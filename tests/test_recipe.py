"""Recipes (configs/recipe/*.yaml): the gold recipe renders a closed graph (external preprocess,
pre-training, weights, folds, offline inference), its parameters reach the rendered notebooks, and the
cost model counts its members."""
from __future__ import annotations

import json

import pytest

from siimcovid import costs, recipe
from siimcovid.errors import UserError
from siimcovid.kaggle import graph as G


def _graph(name):
    r = recipe.load(name)
    g = G.build("me", include=r.include)
    recipe.apply(g, r)
    return g, r


def test_every_recipe_member_is_a_known_member_and_costs_read_the_recipe_files():
    assert set(recipe.names()) >= {"default", "gold"}
    for name in recipe.names():
        members = recipe.load(name).members
        assert costs.RECIPES[name] == members
        assert {m for ms in members.values() for m in ms} <= set(costs.MEMBERS), name


def test_the_gold_recipe_renders_a_closed_graph_with_its_parameters(tmp_path):
    g, r = _graph("gold")
    stages = set(g.stages())
    assert {"wheels", "weights", "preprocess", "preprocess-external", "pretrain-det", "train-study-fold",
            "train-binary-fold", "train-det-fold", "inference"} <= stages
    errors, _ = G.check(g)
    assert errors == []  # among them: the final kernel runs offline
    assert [n.stage for n in g.sinks()] == ["inference"]
    det = g.by_stage("train-det-fold")
    pre = g.by_stage("pretrain-det")[0]
    for n in det:
        assert n.kernel.params["init_from"] == "pretrain-det" and pre.slug in n.upstream
        assert "yolox_l_1024" in n.kernel.params["configs"]
    # every detector a fold trains is pre-trained (init_from refuses a variant with no pre-training)
    assert set(det[0].kernel.params["configs"]) <= set(pre.kernel.params["configs"])
    assert g.by_stage("train-study-fold")[0].kernel.params["config"] == "effv2l_hub_640"
    G.render(g, tmp_path)
    nb = json.loads((tmp_path / det[0].slug / "train-det.ipynb").read_text())
    src = "".join("".join(c["source"]) for c in nb["cells"])
    assert "yolox_l_1024" in src and "pretrain-det" in src  # baked into what `kaggle push` uploads


def test_the_default_recipe_changes_nothing_and_a_stage_the_graph_lacks_is_refused():
    g, _ = _graph("default")
    plain = G.build("me")
    assert [n.slug for n in g.order()] == [n.slug for n in plain.order()]
    assert all(a.kernel.params == b.kernel.params for a, b in zip(g.order(), plain.order()))
    bad = recipe.Recipe(name="bad", params={"pretrain-det": {"configs": []}})
    with pytest.raises(UserError, match="pretrain-det.*the graph lacks"):
        recipe.apply(plain, bad)


def test_kaggle_plan_recipe_gold_prints_the_graph_and_its_costs(tmp_path, capsys):
    from siimcovid.kaggle.cli import cli_kaggle

    assert cli_kaggle(["plan", "--recipe", "gold", "--user", "me", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pretrain-det" in out and "costs (gold recipe" in out and "recipe gold:" in out
    assert "study_effv2l_640" not in out.split("not in the measured table")[-1]  # derived from the 512 row
    rows = costs.read_measured()
    assert rows["study_effv2l_640"]["derived_from"].startswith("study_effv2l_512")
    assert rows["study_effv2l_640"]["gflops"] == pytest.approx(rows["study_effv2l_512"]["gflops"] * 1.5625)
