"""The one config system (siimcovid.variants): variants over a schema, overrides typed by the
schema, unknown keys named with the valid ones, argparse options derived from the schema."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from siimcovid import variants as V
from siimcovid.errors import UserError


@dataclass
class Toy:
    """Toy schema.

    plain: help from the docstring table
    """

    name: str = "base"
    size: int = V.opt(64, "input size (px)")
    lr: float = 1e-3
    on: bool = True
    tta: bool | None = None
    sizes: list[int] = V.opt(default_factory=lambda: [512], help="sizes")
    pair: tuple[float, float] = (0.5, 99.5)
    plain: str | None = None
    mode: str = V.opt("a", "a mode", choices=("a", "b"))
    extra: dict = field(default_factory=dict)
    out: str | None = None


@dataclass
class Required:
    data: str
    n: int = 1


@pytest.fixture
def stage(tmp_path, monkeypatch):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "small.yaml").write_text("size: 32\nlr: 1.0e-2\nsizes: [128, 256]\n")
    (d / "child.py").write_text("_base_ = ['small.yaml']\nsize = 96\nextra = dict(k=1)\n")
    (d / "loop.yaml").write_text("_base_: loop.yaml\n")
    (d / "typo.yaml").write_text("sise: 3\n")
    monkeypatch.setattr(V, "CONFIG_ROOT", tmp_path)
    return "toy"


def test_variant_chain_yaml_and_python_and_name(stage):
    cfg = V.load(stage, "child", None, Toy)
    assert (cfg.name, cfg.size, cfg.lr, cfg.sizes, cfg.extra) == ("child", 96, 0.01, [128, 256], {"k": 1})
    assert V.load(stage, None, None, Toy).name == "base"
    assert V.load(stage, "small", {"name": "mine"}, Toy).name == "mine"
    assert V.list_variants(stage) == ["child", "loop", "small", "typo"]


def test_overrides_are_typed_by_the_schema(stage):
    cfg = V.load(stage, "small", ["size=128", "lr=1e-4", "on=false", "tta=none", "sizes=64,128",
                                  "pair=[1, 99]", "plain=7", "extra.k=2"], Toy)
    assert cfg.size == 128 and isinstance(cfg.size, int)
    assert cfg.lr == pytest.approx(1e-4) and cfg.on is False and cfg.tta is None
    assert cfg.sizes == [64, 128] and cfg.pair == (1.0, 99.0) and cfg.plain == "7" and cfg.extra == {"k": 2}
    with pytest.raises(V.ConfigError, match="size: expected int"):
        V.load(stage, None, {"size": 1.5}, Toy)
    with pytest.raises(V.ConfigError, match="on: expected true/false"):
        V.load(stage, None, ["on=maybe"], Toy)
    with pytest.raises(V.ConfigError, match="mode must be one of a, b"):
        V.load(stage, None, ["mode=c"], Toy)


def test_user_mistakes_are_user_errors_naming_the_fix(stage, tmp_path):
    with pytest.raises(V.UnknownKeyError, match=r"'sise' \(did you mean 'size'\?\); valid keys: .*lr.*size"):
        V.load(stage, "typo", None, Toy)
    with pytest.raises(UserError, match="valid keys"):
        V.load(stage, None, ["nope=1"], Toy)
    with pytest.raises(V.VariantNotFound, match="child, loop, small, typo"):
        V.load(stage, "missing", None, Toy)
    with pytest.raises(V.ConfigError, match="cycle"):
        V.load(stage, "loop", None, Toy)
    with pytest.raises(UserError, match=r"missing data \(options --data"):
        V.load(stage, None, None, Required)
    assert V.load(stage, str(tmp_path / "toy" / "small.yaml"), None, Toy).size == 32  # a path works too


def test_derived_arguments(stage, capsys):
    ap = argparse.ArgumentParser()
    V.add_schema_args(ap, Toy, stage=stage, aliases={"--size-px": "size", "--fast": ("on", False)})
    a = ap.parse_args(["--config", "small", "--sizes", "1", "2", "--sizes", "3", "--no-on", "--set", "lr=0.5",
                       "--pair", "2", "98"])
    o = V.overrides_from_args(a)
    assert o == {"sizes": ["1", "2", "3"], "on": False, "pair": ["2", "98"], "lr": "0.5"}  # only what was given
    cfg = V.load(stage, a.config, o, Toy)
    assert (cfg.size, cfg.sizes, cfg.on, cfg.lr, cfg.pair) == (32, [1, 2, 3], False, 0.5, (2.0, 98.0))
    assert V.overrides_from_args(ap.parse_args(["--size-px", "7", "--fast"])) == {"size": "7", "on": False}
    with pytest.raises(SystemExit):
        ap.parse_args(["--mode", "z"])
    ap.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "input size (px) (default: 64)" in text and "help from the docstring table (default: none)" in text
    assert "(default: 512)" in text and "child, loop, small, typo" in text


def test_a_key_the_schema_lacks_in_a_variant_file_names_the_file(stage, tmp_path):
    with pytest.raises(V.UnknownKeyError, match=r"typo\.yaml: unknown toy config key 'sise'"):
        V.load(stage, "typo", None, Toy)
    with pytest.raises(V.UnknownKeyError) as err:  # from an override: no file to name
        V.load(stage, "small", ["sise=1"], Toy)
    assert "small.yaml" not in str(err.value)


def test_chain_and_own_keys_for_a_layering_of_its_own(stage, tmp_path):
    """What the detector config builds on: the chain's files root first, the package bases it names,
    each file's own keys (helpers, functions and the _base_ left out)."""
    d = tmp_path / "toy"
    (d / "pkg.py").write_text("_base_ = 'mmdet::x/y.py'\n_w = 4\n\ndef _f():\n    return 1\n\n"
                              "model = dict(width=_w)\n")
    (d / "leaf.py").write_text("_base_ = './pkg.py'\nmodel = dict(depth=2)\n")
    files, packages = V.base_chain(d / "leaf.py")
    assert [f.name for f in files] == ["pkg.py", "leaf.py"] and packages == ["mmdet::x/y.py"]
    assert V.own_keys(d / "pkg.py") == {"model": {"width": 4}}
    assert V.own_keys(d / "child.py") == {"size": 96, "extra": {"k": 1}}
    assert V.base_files(d / "leaf.py") == ["./pkg.py"]
    (d / "broken.py").write_text("_base_ = './gone.py'\n")
    with pytest.raises(V.ConfigError, match=r"broken\.py: _base_ './gone.py' does not exist"):
        V.base_chain(d / "broken.py")
    (d / "bad.py").write_text("x = (\n")
    with pytest.raises(V.ConfigError, match=r"bad\.py: unreadable config"):
        V.own_keys(d / "bad.py")
    with pytest.raises(V.ConfigError, match="cycle"):
        V.base_chain(d / "loop.yaml")


def test_overrides_of_a_config_without_a_schema():
    assert V.tree_overrides(["a.b=1", "c=[1, 2]", "d=", "e=x"]) == {"a.b": 1, "c": [1, 2], "d": None, "e": "x"}
    assert V.tree_overrides({"a.b": "1"}) == {"a.b": "1"}  # a dict's values are the caller's
    with pytest.raises(V.ConfigError, match="key=value"):
        V.tree_overrides(["=1"])
    tree = {"train_cfg": {"max_epochs": 1}, "steps": [{"type": "A"}], "lr": 0.1}
    V.check_paths(tree, ["train_cfg.max_epochs", "steps.0.type", "lr"])
    with pytest.raises(V.UnknownKeyError, match=r"no key 'max_epoch' under train_cfg \(did you mean 'max_epochs'\?\)"
                                                r"; valid keys: max_epochs"):
        V.check_paths(tree, ["train_cfg.max_epoch"])
    with pytest.raises(V.UnknownKeyError, match="steps is a list of 1; '3' is not an index"):
        V.check_paths(tree, ["steps.3.type"])
    with pytest.raises(V.UnknownKeyError, match="no key 'x' under lr"):
        V.check_paths(tree, ["lr.x"])
