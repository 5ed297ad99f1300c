"""Config values checked against the annotations of the constructor they are for, before anything is built.

A value of the wrong type would otherwise reach torch and fail deep inside it (`hidden=[512]` for `hidden: int`).
Scalars are strict (an int is not a bool, a float or a numeric string; a float accepts an int); containers are lax
(a list fills a tuple and a tuple a list, as YAML only has lists). Annotations that name something a config value
cannot be (a module, a callable, a Trainer's Accelerator) are left to the constructor.
"""

from __future__ import annotations

import collections.abc as abc
import contextlib
import datetime
import difflib
import enum
import functools
import inspect
import math
import pathlib
import pkgutil
import types
import typing
from typing import Annotated, Any, Literal, Mapping, Union

import annotated_types as at
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import Strict, TypeAdapter, ValidationError

from aelab.errors import ConfigError

_SCALARS = (bool, int, float, str)
_LAX = (type(None), pathlib.PurePath, enum.Enum, datetime.timedelta)  # pydantic's lax parsing is what a config means
_CONTAINERS = {list, tuple, set, frozenset, dict, abc.Sequence, abc.MutableSequence, abc.Mapping, abc.MutableMapping}


@functools.cache
def _hints(target) -> tuple[dict[str, Any], bool]:
    """(annotations of the keyword parameters, whether the **kwargs chain was followed to its end)."""
    chain = [k.__init__ for k in target.__mro__ if "__init__" in vars(k)] if inspect.isclass(target) else [target]
    hints: dict[str, Any] = {}
    seen: set[str] = set()  # a subclass parameter takes the key even when only a base annotates it
    for fn in chain:
        if fn is object.__init__:
            break
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check
            break
        resolved = _resolve(fn)
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in seen:
                seen.add(p.name)
                if p.name in resolved:
                    hints[p.name] = resolved[p.name]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return hints, True
    return hints, False


def _resolve(fn) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name imported only for type checkers: keep the annotations that do resolve
        namespace, out = getattr(inspect.unwrap(fn), "__globals__", {}), {}
        for name, ann in getattr(fn, "__annotations__", {}).items():
            with contextlib.suppress(Exception):
                out[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307 (source annotations)
        return out


def _prepare(tp):
    """The annotation with strict scalars inside lax containers; None when a config value cannot be what it names."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return Annotated[tp, Strict()]
    if tp in _CONTAINERS or origin is Literal or (inspect.isclass(tp) and issubclass(tp, _LAX)):
        return tp
    if origin is Annotated:
        inner = _prepare(args[0])
        return None if inner is None else Annotated[(inner, *args[1:])]
    if origin in (Union, types.UnionType):  # members no config value can be (Tensor, Logger) drop out
        kept = [p for p in map(_prepare, args) if p is not None]
        return Union[tuple(kept)] if any(p is not type(None) for p in kept) else None
    if origin in _CONTAINERS:
        inner = [a if a is Ellipsis else _prepare(a) for a in args]
        return None if any(a is None for a in inner) else origin[tuple(inner)]
    return None  # Any, callables, classes, type variables: the constructor's business


@functools.cache
def _adapter(tp) -> tuple[TypeAdapter, Any] | None:
    try:
        prepared = _prepare(tp)
        return None if prepared is None else (TypeAdapter(prepared), prepared)
    except Exception:  # pydantic cannot validate it: left to the constructor
        return None


def _builds_object(value) -> bool:
    """Hydra instantiates nested `_target_` nodes: their value is an object, not this config data."""
    if isinstance(value, dict):
        return "_target_" in value or any(_builds_object(v) for v in value.values())
    return isinstance(value, list) and any(_builds_object(v) for v in value)


def check_values(target, values: Mapping, what: str) -> None:
    """Raise ConfigError naming `what.key`, the value and what is allowed for the first value that does not fit the
    annotation of the keyword parameter of `target` it is for. Keys without a usable annotation are not checked."""
    hints, _ = _hints(target)
    for key in values:
        if key not in hints:
            continue
        try:
            value = values[key]  # a DictConfig resolves interpolations here
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:  # missing or unresolvable: Hydra reports it in its own words
            continue
        if value == "???" or _builds_object(value):
            continue
        try:
            built = _adapter(hints[key])
        except TypeError:  # unhashable annotation: not cached
            built = _adapter.__wrapped__(hints[key])
        if built is None:
            continue
        try:
            built[0].validate_python(value)
        except ValidationError:
            raise ConfigError(f"{what}.{key}={value!r} is not allowed: expected {describe(built[1])}") from None


_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true/false values"), type(None): ("null", "nulls")}
_WORDS = {at.Gt: "> {0.gt}", at.Ge: ">= {0.ge}", at.Lt: "< {0.lt}", at.Le: "<= {0.le}",
          at.MultipleOf: "a multiple of {0.multiple_of}", at.MinLen: "with at least {0.min_length} item(s)",
          at.MaxLen: "with at most {0.max_length} item(s)"}


def _constraint_words(meta) -> str:
    flat = [x for m in meta for x in (m if isinstance(m, at.GroupedMetadata) else [m])]  # Interval(gt=0, lt=1)
    return " and ".join(_WORDS[type(m)].format(m) for m in flat if type(m) in _WORDS)


def describe(tp, plural: bool = False) -> str:
    """Human words for a (prepared) annotation: "an integer >= 1", "null or a list of numbers", "one of ['a', 'b']"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _NOUNS:
        return _NOUNS[tp][plural]
    if origin is Annotated:
        words = _constraint_words(args[1:])
        return describe(args[0], plural) + (f" {words}" if words else "")
    if origin is Literal:
        return f"{'values from' if plural else 'one of'} {list(args)}"
    if origin in (Union, types.UnionType):
        literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        parts = sorted((a for a in args if typing.get_origin(a) is not Literal), key=lambda a: a is not type(None))
        words = [describe(a, plural) for a in parts] + ([describe(Literal[tuple(literals)], plural)] if literals else [])
        return " or ".join(words)
    if tp in _CONTAINERS or origin in _CONTAINERS:
        mapping = (origin or tp) in (dict, abc.Mapping, abc.MutableMapping)
        noun = ("mappings" if plural else "a mapping") if mapping else ("lists" if plural else "a list")
        if not args:
            return noun
        if mapping:
            return f"{noun} of {describe(args[0], True)} to {describe(args[1], True)}"
        if origin is tuple and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"{noun} of {len(args)} {describe(args[0], True)}"
            return f"{noun} of {len(args)} values ({', '.join(describe(a) for a in args)})"
        return f"{noun} of {describe(args[0], True)}"
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return describe(Literal[tuple(m.value for m in tp)], plural)
    if inspect.isclass(tp) and issubclass(tp, pathlib.PurePath):
        return "paths" if plural else "a path"
    name = getattr(tp, "__name__", str(tp))
    return f"{name} values" if plural else f"a {name}"


# torch.optim annotates these as plain floats (or not at all): the ranges torch or the maths need, checked by hand
_POSITIVE, _NON_NEGATIVE, _UNIT, _OPEN_UNIT = ("> 0", lambda v: v > 0), (">= 0", lambda v: v >= 0), \
    ("in [0, 1]", lambda v: 0 <= v <= 1), ("in [0, 1)", lambda v: 0 <= v < 1)
OPTIMIZER_RANGES = {"lr": _POSITIVE, "weight_decay": _NON_NEGATIVE, "momentum": _OPEN_UNIT, "dampening": _UNIT,
                    "eps": _NON_NEGATIVE, "alpha": _NON_NEGATIVE, "rho": _UNIT, "lr_decay": _NON_NEGATIVE,
                    "initial_accumulator_value": _NON_NEGATIVE}
SCHEDULER_RANGES = {"gamma": _POSITIVE, "factor": ("in (0, 1)", lambda v: 0 < v < 1), "max_lr": _POSITIVE,
                    "eta_min": _NON_NEGATIVE, "min_lr": _NON_NEGATIVE, "pct_start": ("in (0, 1)", lambda v: 0 < v < 1),
                    "div_factor": _POSITIVE, "final_div_factor": _POSITIVE, "threshold": _NON_NEGATIVE,
                    "base_momentum": _OPEN_UNIT, "max_momentum": _OPEN_UNIT}
SCHEDULER_COUNTS = {"patience": 0, "cooldown": 0, "step_size": 1, "T_max": 1, "T_0": 1, "total_steps": 1}
_HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(what: str, value, words: str, ok) -> None:
    if not (_is_number(value) and math.isfinite(value) and ok(value)):
        raise ConfigError(f"{what}={value!r} is not allowed: expected a finite number {words}")


def check_optimization(optimizer: Mapping | None, scheduler: Mapping | None) -> None:
    """Raise ConfigError for the first bad `optimizer` or `scheduler` value, before any data is read: torch would
    refuse it only when training starts, or fail inside itself (`lr=abc`: TypeError from a comparison)."""
    for what, node, passed, ranges in (("optimizer", optimizer, "params", OPTIMIZER_RANGES),
                                       ("scheduler", scheduler, "optimizer", SCHEDULER_RANGES)):
        if not node:
            continue
        try:
            values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        except OmegaConfBaseException:  # an unresolvable interpolation: Hydra names it when it builds the node
            continue
        name = values.get("_target_")
        target = _resolve_name(name)
        if not callable(target):
            example = "torch.optim.Adam" if what == "optimizer" else "torch.optim.lr_scheduler.StepLR"
            raise ConfigError(f"{what}._target_={name!r} is not allowed: expected an importable class, e.g. "
                              f"{example}{_near_name(name)}")
        if values.get("_partial_") is not True:
            raise ConfigError(f"{what}._partial_={values.get('_partial_')!r} is not allowed: expected true (aelab "
                              f"passes the {passed})")
        from aelab.optim import OWN_KEYS  # aelab's own keys of the scheduler node, not the scheduler's

        own = OWN_KEYS if what == "scheduler" else ()
        keys = {k: v for k, v in values.items() if k not in _HYDRA_KEYS and k not in own}
        _check_keys(target, keys, what, passed)
        for key, value in keys.items():
            if key in ranges:
                for i, item in enumerate(value if isinstance(value, list) else [value]):  # per-group lists
                    _check_number(f"{what}.{key}" + (f"[{i}]" if isinstance(value, list) else ""), item, *ranges[key])
            elif key == "betas":
                if not (isinstance(value, list) and len(value) == 2):
                    raise ConfigError(f"{what}.betas={value!r} is not allowed: expected a list of 2 numbers in [0, 1)")
                for i, beta in enumerate(value):
                    _check_number(f"{what}.betas[{i}]", beta, *_OPEN_UNIT)
            elif what == "scheduler" and key in SCHEDULER_COUNTS and not (key == "total_steps" and value is None):
                if not (isinstance(value, int) and not isinstance(value, bool) and value >= SCHEDULER_COUNTS[key]):
                    raise ConfigError(f"{what}.{key}={value!r} is not allowed: expected an integer >= "
                                      f"{SCHEDULER_COUNTS[key]}")
        check_values(target, {k: v for k, v in keys.items() if k not in ranges and k != "betas"}, what)


def _check_keys(target, keys: Mapping, what: str, passed: str) -> None:
    """Unknown keys and missing required ones, named with what the target accepts."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != passed]
    unknown = sorted(set(keys) - set(accepted))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown} for {target.__name__}; allowed: {', '.join(accepted)}")
    required = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in keys]
    if required:
        raise ConfigError(f"{what}: {target.__name__} needs {', '.join(required)}; add "
                          f"{' '.join(f'+{what}.{n}=...' for n in required)}")


def _resolve_name(name) -> Any:
    try:
        return pkgutil.resolve_name(name) if isinstance(name, str) else None
    except (ImportError, AttributeError, ValueError):
        return None


def _near_name(name) -> str:
    """"; did you mean torch.optim.Adam?" for a typo in the last part of an importable module's name."""
    module, _, attr = str(name).rpartition(".")
    found = _resolve_name(module) if module else None
    names = {n.lower(): n for n in dir(found)} if found is not None else {}
    near = difflib.get_close_matches(attr.lower(), names, n=1)  # Adamw: AdamW
    return f"; did you mean {module}.{names[near[0]]}?" if near else ""
