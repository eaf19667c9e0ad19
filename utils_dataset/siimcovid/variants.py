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

The detector configs layer our project keys between mmdet's config and the variant files, which
mmengine's merge of a whole chain cannot express: they take the pieces instead -- the variant file
(:func:`variant_path`), its chain (:func:`base_chain`), each file's own keys (:func:`own_keys`),
``--set`` read as YAML (:func:`tree_overrides`) and checked against the built tree
(:func:`check_paths`), so the detector has no reader of its own.

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


PACKAGE_BASE = "::"  # `_base_ = 'mmdet::dcn/...'`: a config inside an installed package (mmengine finds it)


def base_files(path: str | os.PathLike) -> list[str]:
    """The ``_base_`` entries of one config file, as written (not followed)."""
    from mmengine.config import Config

    try:
        return list(Config._get_base_files(str(path)))
    except Exception as exc:  # noqa: BLE001 - mmengine's parse errors share no base class
        raise ConfigError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc


def base_chain(path: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """The files a config is merged from, each after its own bases (``path`` last), and the package
    configs (``pkg::name``) the chain names. A ``_base_`` cycle (mmengine would recurse forever) or
    a missing base is a ConfigError naming the file."""
    files: list[Path] = []
    packages: list[str] = []

    def walk(p: Path, seen: tuple[Path, ...]) -> None:
        p = p.resolve()
        if p in seen:
            raise ConfigError(f"{p}: _base_ cycle through {[str(x) for x in seen]}")
        for base in base_files(p):
            if PACKAGE_BASE in base:
                packages.append(base)
                continue
            if not (p.parent / base).is_file():
                raise ConfigError(f"{p}: _base_ {base!r} does not exist")
            walk(p.parent / base, seen + (p,))
        if p not in files:
            files.append(p)

    walk(Path(path), ())
    return files, packages


def own_keys(path: str | os.PathLike) -> dict[str, Any]:
    """One config file's own keys, its ``_base_`` not followed: for a layering that mmengine's merge
    of the whole chain cannot express (the detector's project layer between mmdet's config and
    ours). In a .py file functions, classes and modules are not keys, nor are names starting
    with ``_``: the file's helpers (``_base_`` included)."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix == ".py":
            ns: dict[str, Any] = {}
            exec(compile(text, str(path), "exec"), ns)  # noqa: S102 - as mmengine does with a .py config
            data = {k: v for k, v in ns.items()
                    if not k.startswith("_") and not callable(v) and not isinstance(v, types.ModuleType)}
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - whatever the file raises, the message names it
        raise ConfigError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    data.pop("_base_", None)
    return data


def read_variant(path: str | os.PathLike) -> dict[str, Any]:
    """The variant's keys merged over its ``_base_`` chain (mmengine ``Config.fromfile``)."""
    from mmengine.config import Config

    path = Path(path)
    base_chain(path)
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
def parse_sets(items: Iterable[str], *, typed: bool = False) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: "value"}: values stay text for :func:`load` to type by the
    schema; ``typed`` reads them as YAML (an empty value is None), for a config without a schema."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = (_yaml_scalar(value) if value.strip() else None) if typed else value
    return out


def _override_items(overrides: Any, typed: bool = False) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        return parse_sets([overrides], typed=typed)
    out: dict[str, Any] = {}
    for item in overrides:  # a sequence of "k=v" strings and/or dicts, applied in order
        out.update(_override_items(item, typed))
    return out


def tree_overrides(overrides: Any) -> dict[str, Any]:
    """Overrides for a config without a schema (an mmengine tree: the detector's), in the forms
    :func:`load` takes; "key=value" values are read as YAML, a dict's values are kept."""
    return _override_items(overrides, typed=True)


def check_paths(tree: Mapping, keys: Iterable[str]) -> None:
    """Each dotted key (``train_cfg.max_epochs``; a number indexes a list) must name an entry of
    ``tree``: in a config without a schema a typo would silently add a key nobody reads. An
    UnknownKeyError lists the valid names where the path left the tree."""
    for key in keys:
        node: Any = getattr(tree, "_cfg_dict", tree)  # an mmengine Config: its plain tree
        parts = key.split(".")
        for i, part in enumerate(parts):
            where = ".".join(parts[:i]) or "(top level)"
            if isinstance(node, (list, tuple)):
                if not (part.isdigit() and int(part) < len(node)):
                    raise UnknownKeyError(f"--set {key}: {where} is a list of {len(node)}; "
                                          f"{part!r} is not an index of it")
                node = node[int(part)]
                continue
            if not isinstance(node, Mapping) or part not in node:
                valid = sorted(map(str, node)) if isinstance(node, Mapping) else []
                close = difflib.get_close_matches(part, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownKeyError(f"--set {key}: no key {part!r} under {where}{hint}; valid keys: "
                                      f"{', '.join(valid) or f'none ({where} is a value)'}")
            node = node[part]


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
    source: Path | None = None
    if variant not in (None, ""):
        source = variant_path(stage, variant)
        values.update(read_variant(source))
        name = source.stem
    from_file = set(values)
    for key, value in _override_items(overrides).items():
        if "." in key:
            head, sub = key.split(".", 1)
            cur = values.get(head, _field_default(schema, head))
            if not isinstance(cur, Mapping):
                raise ConfigError(f"{stage} config {key}: {head!r} is not a mapping")
            values[head] = {**cur, sub: _yaml_scalar(value) if isinstance(value, str) else value}
        else:
            values[key] = value
            from_file.discard(key)
    fields = schema_fields(schema)
    for key in values:
        if key not in fields:
            err = unknown_key(schema, key, stage)
            raise UnknownKeyError(f"{source}: {err}") if key in from_file else err
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
    """The field's metadata help, else its line in the docstring table (``name: help``) of the class
    or of the first base class that has one (a subclass documents only the fields it adds)."""
    f = schema_fields(schema)[name]
    if f.metadata.get("help"):
        return f.metadata["help"]
    for cls in getattr(schema, "__mro__", (schema,)):
        m = re.search(rf"^\s*{re.escape(name)}\s*:\s*(.+)$", cls.__doc__ or "", re.M)
        if m:
            return m.group(1).strip()
    return ""


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
