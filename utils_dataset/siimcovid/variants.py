"""One config system for every stage: a dataclass is the typed schema (its defaults are the base),
variant files hold only the keys they change.

A variant is ``siimcovid/configs/<stage>/<name>.yaml`` (or ``.py``, or any path), read by
mmengine's ``Config``: ``_base_`` chains (YAML or Python), and in Python variants mmdet's
``mmdet::`` inheritance, so the Keras stages and the mmdet detector configs are one system.
``--set key=value`` (or a dict) overrides single keys last; every key is checked against the
schema and coerced to the field's type, an unknown key is a :class:`UnknownKeyError` that lists
the valid names. A schema with a ``name`` field gets the variant's file stem as its name (the
output folder), unless ``name`` is set.

    cfg = load("study", "tiny_cpu", ["image_size=96"], StudyConfig)
    ap = argparse.ArgumentParser(); add_schema_args(ap, StudyConfig, stage="study")
    cfg = load("study", a.config, overrides_from_args(a), StudyConfig)

Help for a derived option comes from the field's metadata (``opt(default, "help")``) or, for
schemas that keep plain fields, from a table in the class docstring (lines ``name: help``).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UserError

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
SUFFIXES = (".yaml", ".yml", ".py", ".json")
NONE_WORDS = ("none", "null", "~")


class ConfigError(UserError, ValueError):
    """A config value or file the user can fix (also a ValueError for older callers)."""

    def __str__(self) -> str:  # (KeyError would quote the message)
        return str(self.args[0]) if self.args else ""


class UnknownKeyError(ConfigError, KeyError):
    """A key that is not a field of the schema; the message lists the valid names."""


class VariantNotFound(ConfigError, FileNotFoundError):
    """A variant name that is neither a file nor a variant of the stage; lists the variants."""


def opt(default: Any = dataclasses.MISSING, help: str = "", *, choices: Iterable | None = None,
        default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its CLI help (and allowed values) as metadata."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- finding variants
def stage_dir(stage: str) -> Path:
    return CONFIG_ROOT / stage


def list_variants(stage: str) -> list[str]:
    d = stage_dir(stage)
    return sorted({p.stem for p in d.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("_")}) \
        if d.is_dir() else []


def variant_path(stage: str, name: str | os.PathLike) -> Path:
    """A variant file: an existing path, else ``configs/<stage>/<name>(.yaml|.py|...)``."""
    p = Path(name)
    if p.suffix in SUFFIXES and p.is_file():
        return p
    for suffix in ((p.suffix,) if p.suffix in SUFFIXES else SUFFIXES):
        cand = stage_dir(stage) / f"{p.stem if p.suffix in SUFFIXES else p.name}{suffix}"
        if cand.is_file():
            return cand
    raise VariantNotFound(f"{stage} config {str(name)!r} not found (a file, or one of: "
                          f"{', '.join(list_variants(stage)) or '(none)'})")


def _check_bases(path: Path, seen: tuple[Path, ...] = ()) -> None:
    """A ``_base_`` cycle is a ConfigError naming the chain (mmengine would recurse forever)."""
    from mmengine.config import Config

    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {[str(p) for p in seen]}")
    try:
        bases = Config._get_base_files(str(path))
    except Exception:  # noqa: BLE001 - unreadable here: Config.fromfile reports it properly
        return
    for base in bases:
        if "::" in base:  # mmdet::... lives in an installed package
            continue
        _check_bases(path.parent / base, seen + (path,))


def read_variant(path: str | os.PathLike) -> dict[str, Any]:
    """The variant's keys merged over its ``_base_`` chain (mmengine ``Config.fromfile``)."""
    from mmengine.config import Config

    path = Path(path)
    _check_bases(path)
    try:
        cfg = Config.fromfile(str(path))
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, ImportError) as exc:
        raise ConfigError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc
    data = cfg.to_dict()
    data.pop("_base_", None)
    return data


# --------------------------------------------------------------------------- typing
def schema_fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return tp, False


def _yaml_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def coerce(schema: type, key: str, value: Any) -> Any:
    """A YAML / CLI value -> the type of field ``key`` ('none' -> None where the field allows it)."""
    fields = schema_fields(schema)
    if key not in fields:
        raise unknown_key(schema, key)
    tp, optional = _split_optional(_hints(schema)[key])
    what = f"{schema.__name__} {key}"
    if isinstance(value, str) and value.strip().lower() in NONE_WORDS and optional:
        return None
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{what}: may not be none")
    return _coerce_to(tp, value, what)


def _coerce_to(tp: Any, value: Any, what: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is str:
        return value if isinstance(value, str) else str(value)
    if tp is bool:
        if isinstance(value, str):
            value = _yaml_scalar(value)
        if not isinstance(value, bool):
            raise ConfigError(f"{what}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):
            value = _yaml_scalar(value)
            if isinstance(value, str):
                try:  # YAML 1.1 reads "1e-3" as a string
                    value = float(value)
                except ValueError:
                    raise ConfigError(f"{what}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what}: expected {tp.__name__}, got {value!r}")
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{what}: expected int, got {value!r}")
            return int(value)
        return float(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            parsed = _yaml_scalar(value)
            value = parsed if isinstance(parsed, (list, tuple)) else [v for v in re.split(r"[,\s]+", value) if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{what}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce_to(a, v, what) for a, v in zip(args, value))
        elem = args[0] if args else Any
        items = [_coerce_to(elem, v, what) for v in value]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = _yaml_scalar(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{what}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{what}: expected {tp.__name__}, got {value!r}")
    return value


def unknown_key(schema: type, key: str, stage: str | None = None) -> UnknownKeyError:
    valid = sorted(schema_fields(schema))
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownKeyError(f"unknown {stage or schema.__name__} config key {key!r}{hint}; valid keys: "
                           f"{', '.join(valid)}")


# --------------------------------------------------------------------------- loading
def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: "value"} (values stay text; :func:`load` types them)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _override_items(overrides: Any) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        return parse_sets([overrides])
    out: dict[str, Any] = {}
    for item in overrides:  # a sequence of "k=v" strings and/or dicts, applied in order
        out.update(_override_items(item))
    return out


def load(stage: str, variant: str | os.PathLike | None = None, overrides: Any = None, schema: type | None = None,
         *, default_name: str = "base") -> Any:
    """Schema defaults <- variant (with its bases) <- overrides -> a schema instance.

    ``overrides``: a dict, ``["key=value", ...]``, or a list of both (applied in order); a dotted
    key ``learner.patch_iter=50`` sets one entry of a dict field. The instance's ``validate()``
    runs when the schema has one. Raises ConfigError (a UserError) for every user mistake."""
    if schema is None:
        raise TypeError("variants.load: schema (the stage's dataclass) is required")
    values: dict[str, Any] = {}
    name = default_name
    if variant not in (None, ""):
        path = variant_path(stage, variant)
        values.update(read_variant(path))
        name = path.stem
    for key, value in _override_items(overrides).items():
        if "." in key:
            head, sub = key.split(".", 1)
            cur = values.get(head, _field_default(schema, head))
            if not isinstance(cur, Mapping):
                raise ConfigError(f"{stage} config {key}: {head!r} is not a mapping")
            values[head] = {**cur, sub: _yaml_scalar(value) if isinstance(value, str) else value}
        else:
            values[key] = value
    fields = schema_fields(schema)
    for key in values:
        if key not in fields:
            raise unknown_key(schema, key, stage)
    kwargs = {k: coerce(schema, k, v) for k, v in values.items()}
    if "name" in fields and "name" not in values:
        kwargs["name"] = name
    missing = [f.name for f in fields.values() if f.name not in kwargs and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{stage} config: missing {', '.join(missing)} (options "
                          f"{', '.join(flag(m) for m in missing)} or --set {missing[0]}=...)")
    cfg = schema(**kwargs)
    for key, f in fields.items():
        allowed = f.metadata.get("choices")
        if allowed and getattr(cfg, key) is not None and getattr(cfg, key) not in allowed:
            raise ConfigError(f"{stage} config {key} must be one of {', '.join(map(str, allowed))}, "
                              f"got {getattr(cfg, key)!r}")
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def _field_default(schema: type, key: str) -> Any:
    f = schema_fields(schema).get(key)
    if f is None:
        raise unknown_key(schema, key)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(schema: type, data: Mapping[str, Any]) -> Any:
    """A saved config (e.g. a run's config.json) back into the schema; keys it does not know
    (written by another version) are left out, values are typed."""
    fields = schema_fields(schema)
    return schema(**{k: coerce(schema, k, v) for k, v in data.items() if k in fields})


# --------------------------------------------------------------------------- argparse
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_help(schema: type, name: str) -> str:
    """The field's metadata help, else its line in the class docstring table (``name: help``)."""
    f = schema_fields(schema)[name]
    if f.metadata.get("help"):
        return f.metadata["help"]
    m = re.search(rf"^\s*{re.escape(name)}\s*:\s*(.+)$", schema.__doc__ or "", re.M)
    return m.group(1).strip() if m else ""


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(empty)"
    return "none" if value is None else str(value)


def add_schema_args(parser: argparse.ArgumentParser, schema: type, *, stage: str | None = None,
                    exclude: Iterable[str] = (), aliases: Mapping[str, Any] | None = None,
                    choices: Mapping[str, Iterable] | None = None) -> argparse.ArgumentParser:
    """One option per schema field (``--image-size``), help showing the default; with ``stage``
    also ``--config VARIANT`` and ``--set KEY=VALUE``. Only options given on the command line
    reach :func:`overrides_from_args` (argparse defaults are suppressed), so a variant's values
    are not overwritten by the schema's defaults.

    ``aliases``: extra flags kept for compatibility, ``{"--size": "sizes"}`` (another name for the
    option) or ``{"--fast-voi": ("exact", False)}`` (a switch that stores a constant)."""
    aliases = dict(aliases or {})
    choices = dict(choices or {})
    hints = _hints(schema)
    if stage is not None:
        known = list_variants(stage)
        parser.add_argument("--config", default=None, metavar="VARIANT",
                            help=f"variant in siimcovid/configs/{stage}/ or a config file path"
                                 + (f" ({', '.join(known)})" if known else ""))
        parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                            help="override one config key (repeatable), e.g. --set key=value")
    group = parser.add_argument_group(f"{stage or schema.__name__} config (default: the variant's, else shown)")
    for name, f in schema_fields(schema).items():
        if name in exclude or not f.init:
            continue
        default = _field_default(schema, name)
        tp, _ = _split_optional(hints[name])
        extra = [a for a, target in aliases.items() if target == name]
        helptext = field_help(schema, name)
        allowed = choices.get(name) or f.metadata.get("choices")
        kw: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] = f"{helptext} (default: {_show(default)})".strip()
        else:
            origin = typing.get_origin(tp) or tp
            if origin in (list, tuple):
                args = typing.get_args(tp)
                fixed = origin is tuple and args and args[-1] is not Ellipsis
                kw.update(nargs=len(args) if fixed else "+", action="store" if fixed else "extend")
            if allowed:
                kw["choices"] = list(allowed)
            kw["metavar"] = None if allowed else name.upper()
            if origin is dict:
                kw["metavar"] = "YAML"
            kw["help"] = f"{helptext} (default: {_show(default)})".strip()
        group.add_argument(flag(name), *extra, **kw)
    parser.set_defaults(_schema_fields=tuple(n for n in schema_fields(schema) if n not in exclude))
    for alias, target in aliases.items():
        if isinstance(target, tuple):
            dest, const = target
            group.add_argument(alias, dest=dest, action="store_const", const=const, default=argparse.SUPPRESS,
                               help=f"same as --set {dest}={_show(const).lower()}")
    return parser


def overrides_from_args(args: argparse.Namespace, schema: type | None = None) -> dict[str, Any]:
    """The schema options given on the command line, then ``--set`` pairs (which win)."""
    d = vars(args)
    names = set(schema_fields(schema)) if schema is not None else set(d.get("_schema_fields", ()))
    out = {k: v for k, v in d.items() if k in names}
    out.update(parse_sets(d.get("sets") or []))
    return out
