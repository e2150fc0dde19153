"""Dataclass configs: build them from overrides given as Python values or as strings from the CLI.

Every component has one dataclass config with commented defaults. Overrides are validated before any
work: an unknown key names the fields that exist, a value of the wrong type says which type was expected.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from ..errors import ConfigError, did_you_mean

C = TypeVar("C")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_SCALARS = (bool, int, float, str, type(None))


def carried(tp: Any) -> bool:
    """Whether `coerce` and a checkpoint's JSON metadata can carry a field of type `tp`."""
    origin = get_origin(tp)
    if tp is Any or tp in _SCALARS:
        return True
    if origin is Literal:
        return all(isinstance(a, _SCALARS) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType, tuple, list):
        return all(a is Ellipsis or carried(a) for a in get_args(tp))
    if origin is dict or tp in (dict, list, tuple):
        args = get_args(tp)
        return not args or (args[0] is str and carried(args[1]))
    return False


def check_field_types(name: str, cls: type) -> None:
    """Refuse (ValueError) a config whose hints do not resolve or whose fields --set and checkpoints cannot carry."""
    try:
        types_ = field_types(cls)
    except Exception as e:  # NameError: a type imported only under TYPE_CHECKING, with postponed annotations
        raise ValueError(f"{name}: the type hints of {cls.__name__} do not resolve ({type(e).__name__}: {e}); "
                         "import the types its fields use at run time.") from None
    for field, tp in types_.items():
        if not carried(tp):
            raise ValueError(
                f"{name}: config field {field!r} of {cls.__name__} is a {_tname(tp)}, which --set, config.toml and "
                "checkpoints cannot carry; use bool, int, float, str, a Literal of those (for an Enum, its values), "
                "or a tuple, list, dict[str, ...] or Optional of them.")


def _parse_scalar(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (a Python value or a CLI string) to type `tp`, or raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a valid {_tname(tp)}.")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str) and _parse_scalar(value.strip()) in choices:  # "64" for Literal[32, 64]
            return _parse_scalar(value.strip())
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            parsed = _parse_scalar(text if text.startswith("[") else f"[{text}]")
            if isinstance(parsed, str):  # bare words, as typed on a command line: relu1_1,relu2_1
                body = text[1:-1] if text.startswith("[") and text.endswith("]") else text
                parsed = [w.strip() for w in body.split(",") if w.strip()]
            value = parsed
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}.")
            return tuple(coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        seq = [coerce(v, inner, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = _parse_scalar(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table of key = value, got {value!r}.")
        args = get_args(tp)
        vt = args[1] if args else Any
        return {str(k): coerce(v, vt, where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}.")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        if not math.isfinite(number):  # NaN slips through every `x < 0` check and poisons the run later
            raise ConfigError(f"{where}: expected a finite number, got {value!r}.")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}.")
    return value


def _tname(tp: Any) -> str:
    """A readable type: `tuple[float, float]`, `Literal['fp32', 'bf16']`, `int | None`, `int`."""
    if get_origin(tp) is not None:  # generic aliases report only their origin's __name__
        return str(tp).replace("typing.", "").replace("NoneType", "None")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# Upper bounds on the numbers any config may hold, by field name, wherever the value comes from (flags, --set,
# config files, a checkpoint's metadata): an absurd value is one line before anything is built or allocated.
# docs/promises.md lists them; a plugin's own fields of these names get the same bounds.
BOUNDS: dict[str, float] = {
    **dict.fromkeys(("size", "style_size"), 8192),  # image sides in pixels
    **dict.fromkeys(("channels", "in_channels", "out_channels", "cond_channels", "max_channels"), 8192),
    **dict.fromkeys(("blocks", "depth", "downsample", "n_down", "n_layers", "n_res", "scales"), 256),
    "latent_dim": 65536, "num_labels": 4096, "batch": 65536, "num_samples": 4096, "eval_holdout": 4096,
    "d_steps": 100, "epochs": 1e6, "zoom": 16.0, "cache_mb": 1e7,
    **dict.fromkeys(("steps", "ckpt_every", "sample_every", "log_every", "eval_every", "max_bad_steps"), 10**9),
    "seed": 2**48 - 1,  # the seed's low 48 bits are what the run's random streams use (files/data.py _seed)
}
MAX_INT = 2**31 - 1  # any other whole number
MAX_FLOAT = 1e12  # any other number
MAX_DEPTH = 32  # nesting of tables and lists in config files and checkpoint metadata


def check_bounds(name: str, value: Any, where: str) -> None:
    """Refuse a number beyond what field `name` may hold (BOUNDS, else MAX_INT / MAX_FLOAT), or a negative seed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bound = BOUNDS.get(name, MAX_INT if isinstance(value, int) else MAX_FLOAT)
    shown = int(bound) if float(bound).is_integer() else bound
    if name == "seed" and value < 0:
        why = "a seed is 0 or more"
    elif value > bound:
        why = f"at most {shown}"
    elif value < -bound:
        why = f"at least -{shown}"
    else:
        return
    raise ConfigError(f"{where} = {value} is out of range: {why} (the bounds every config and checkpoint is held "
                      "to: docs/promises.md).")


def nesting(value: Any) -> int:
    """How deep tables and lists nest in `value` (0 for a scalar), without recursing."""
    depth, level = 0, [(value, 1)]
    while level:
        v, d = level.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            depth = max(depth, d)
            if d <= MAX_DEPTH:
                level.extend((x, d + 1) for x in v)
    return depth


def build_config(cls: type[C], overrides: Mapping[str, Any] | None = None, *, owner: str = "") -> C:
    """Return `cls()` with `overrides` applied; unknown keys and wrong types raise ConfigError."""
    overrides = dict(overrides or {})
    types_ = field_types(cls)
    prefix = f"{owner}." if owner else ""
    for key in overrides:
        if key not in types_:
            hint = did_you_mean(key, types_)
            raise ConfigError(
                f"Unknown config key '{prefix}{key}'.{hint} Valid keys: {', '.join(types_) or '(none)'}."
            )
    values = {k: coerce(v, types_[k], f"{prefix}{k}") for k, v in overrides.items()}
    for k, v in values.items():
        check_bounds(k, v, f"{prefix}{k}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{owner or cls.__name__}: {e}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON/TOML-friendly values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _field_comments(cls: type) -> dict[str, str]:
    """The `# comment` after each `field: type = default` in the dataclass source (house style for docs)."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        above: list[str] = []  # a comment on the lines just above a field also documents it
        for line in src.splitlines():
            if re.match(r"\s+#", line):
                above.append(line.strip().lstrip("#").strip())
                continue
            m = re.match(r"\s+(\w+)\s*:[^#=]*(?:=[^#]*)?(?:#\s*(.+))?$", line)
            if m and (m.group(2) or above):
                out.setdefault(m.group(1), (m.group(2) or " ".join(above)).strip())
            above = []
    return out


def describe_fields(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, meaning) for each field of a config dataclass, for `stylezoo info`.

    The meaning is the field's `metadata["help"]`, else the comment after it in the source.
    """
    out = []
    types_ = field_types(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append((f.name, _tname(types_[f.name]), default, str(f.metadata.get("help") or comments.get(f.name, ""))))
    return out
