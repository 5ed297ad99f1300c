"""Hydra override lines as aelab reads them back (a job's .hydra/overrides.yaml, a sweep's multirun.yaml): one
parser, Hydra's own, for aelab-compare's table and the HPARAMS session alike."""

from __future__ import annotations

DELETED = "<deleted>"


def parse(lines) -> list:
    """Hydra's Override objects for `lines`; a line the parser refuses (one Hydra itself accepted in another form)
    is skipped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for line in lines or []:
        try:
            out.extend(parser.parse_overrides([str(line)]))
        except Exception:  # noqa: BLE001 - Hydra's grammar errors have no common public base class
            continue
    return out


def typed(override) -> str:
    """The value as the user typed it ("1e-3", "[16,8,8]"), not as Hydra parsed it."""
    if override.input_line:
        return str(override.input_line).lstrip("+").split("=", 1)[-1]
    return str(override.value())


def as_dict(lines) -> dict[str, str]:
    """["model=vae_conv", "+x.y=1", "~z"] -> {"model": "vae_conv", "x.y": "1", "z": "<deleted>"}."""
    return {o.key_or_group: DELETED if o.is_delete() else typed(o) for o in parse(lines)}


def is_sweep(value: str) -> bool:
    """Hydra sweep syntax: a,b,c or range(...)/choice(...)/glob(...)/interval(...); [1,2] and 'a,b' are one value."""
    found = parse([f"key={value}"])
    return bool(found) and found[0].is_sweep_override()
