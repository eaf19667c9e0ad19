"""Recipes: one named choice of the whole graph (configs/recipe/<name>.yaml), read by ``kaggle plan|render|push
--recipe`` (which optional stages join, the notebook parameters per stage) and by the cost model (which
members each stage trains). ``default`` is the templates' own settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import variants

STAGE = "recipe"  # the recipes are variants in configs/recipe/
DEFAULT = "default"


@dataclass
class Recipe:
    """A recipe (configs/recipe/<name>.yaml).

    include: optional stages that join the graph (e.g. preprocess-external, pretrain-det)
    params: stage (template name) -> notebook parameters on top of the template's own
    members: stage -> the cost model's members (siimcovid.costs.MEMBERS) one kernel of that stage trains
    notes: what the recipe leaves out or assumes, printed with the plan
    """
    name: str = DEFAULT
    include: list = field(default_factory=list)
    params: Optional[dict] = None
    members: Optional[dict] = None
    notes: list = field(default_factory=list)


def names() -> list[str]:
    return variants.list_variants(STAGE)


def load(name: str | None = None) -> Recipe:
    r = variants.load(STAGE, name or DEFAULT, None, Recipe)
    r.params, r.members = r.params or {}, r.members or {}
    return r


def apply(graph, recipe: Recipe) -> None:
    """The recipe's parameters onto every kernel of their stage (in place; they are baked into the
    rendered notebooks). A stage the graph lacks is an error: the recipe and the graph disagree."""
    from .errors import UserError

    unknown = sorted(set(recipe.params) - set(graph.stages()))
    if unknown:
        raise UserError(f"recipe {recipe.name!r} sets params of stage(s) {unknown} the graph lacks "
                        f"(stages: {', '.join(graph.stages())})")
    for node in graph.order():
        node.kernel.params.update(recipe.params.get(node.stage, {}))
