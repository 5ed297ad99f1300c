"""One entry wrapper for every console script (aelab-train, aelab-eval, aelab-compare): a user's mistake ends in
one line, `aelab-<cmd>: error: ...`, naming the key or path and the fix, and exit code 1; no traceback.

Hydra prints its own errors (an unknown key, an override its grammar cannot read, a missing config option, a run
directory it cannot create) with a hint about HYDRA_FULL_ERROR, or as a traceback. The wrapper sets that
documented variable so Hydra raises them instead, and words them here. A user who sets HYDRA_FULL_ERROR=1
themselves gets Hydra's full traceback, as Hydra documents.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from aelab.errors import AelabError

WHY = {errno.ENOTDIR: "a part of that path is a file, not a folder", errno.EEXIST: "a file of that name is in the way",
       errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
       errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full"}
PATH_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "resume", "paths.log_dir", "paths.output_dir")


def entry(prog: str, config_name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a console script's main(); `config_name` is its Hydra config (for the keys near a typo)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def main(*args, **kwargs):
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                return fn(*args, **kwargs)
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                raise SystemExit(130) from None
            except Exception as error:  # noqa: BLE001 - only a user's mistake is worded; anything else re-raises
                message = user_error(error, sys.argv[1:], config_name)
                if message is None:
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                raise SystemExit(1) from None
            finally:
                os.environ.pop("HYDRA_FULL_ERROR", None)

        return main

    return decorate


def user_error(error: BaseException, argv: list[str], config_name: str | None) -> str | None:
    """The one line for an error that a user's input caused, or None for one that is aelab's own bug."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, AelabError):
        return " ".join(str(error).split())
    if isinstance(error, OverrideParseException):
        return parse_error(error, argv)
    if isinstance(error, MissingConfigException):
        return missing_option(error, argv)
    if isinstance(error, ConfigCompositionException) and str(error).startswith(("Could not override",
                                                                              "Could not delete")):
        return unknown_key(error, argv, config_name)
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return flat(error)
    if isinstance(error, OSError) and error.filename:
        return path_error(error, argv)
    if isinstance(error, ValueError) and str(error).startswith("Config group override must be a string or a list"):
        return null_group(argv)
    return None


def null_group(argv: list[str]) -> str:
    """`group=null` on the command line: Hydra's defaults list takes an option name there, not null."""
    from aelab.config import CONFIG_DIR

    given = next((a for a in argv if "=" in a and a.split("=", 1)[1] in ("null", "~")
                  and (CONFIG_DIR / a.split("=", 1)[0].lstrip("+~")).is_dir()), "GROUP=null")
    group = given.split("=", 1)[0].lstrip("+~")
    none = f"{group}=none or " if (CONFIG_DIR / group / "none.yaml").is_file() else ""
    return f"{given}: a config group takes an option, not null; to use none, write {none}~{group}"


def flat(error: BaseException) -> str:
    """An error's message and its cause's on one line, without Hydra's pointers to its docs and search path."""
    text = str(error).split("\nConfig search path:")[0]
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += f" ({error.__cause__})"
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https:"))


def override_for(key: str, argv: list[str]) -> str:
    """The command-line override addressing `key` (as typed), else `key` itself."""
    return next((a for a in argv if a.split("=", 1)[0].lstrip("~+").split("@")[0] == key), key)


def parse_error(error, argv: list[str]) -> str:
    text = error.override
    if "=" not in text:
        before = argv[argv.index(text) - 1] if text in argv and argv.index(text) > 0 else ""
        if "=" in before and not before.startswith("-"):
            return (f"{text!r} is not an override (KEY=VALUE); if it is the rest of {before.split('=', 1)[0]}'s value, "
                    f"quote the whole override for the shell: {shlex.quote(f'{before} {text}')}")
        return f"{text!r} is not an override; write KEY=VALUE, e.g. model=vae_conv or trainer.max_epochs=5"
    key, value = text.split("=", 1)
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (f"{text}: Hydra's override grammar cannot read this value unquoted (letters beyond ASCII, spaces at "
            "either end, and = , [ ] { } ( ) ' \" need quotes); quote it, in double quotes inside the shell's single "
            f"ones: {shlex.quote(f'{key}={quoted}')}")


def missing_option(error, argv: list[str]) -> str:
    missing = (error.missing_cfg_file or "").strip("/")
    group, _, option = missing.rpartition("/")
    if not group:
        return flat(error)
    options = sorted(error.options or [])
    near = difflib.get_close_matches(option, options, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(f'{group}={o}' for o in near)}?" if near else ""
    given = override_for(group, argv)
    given = given if given != group else f"{group}={option}"
    return (f"{given}: Could not find '{missing}'; available options in '{group}': {', '.join(options) or 'none'}"
            f"{hint}")


def unknown_key(error, argv: list[str], config_name: str | None) -> str:
    """Name the key that does not exist, the keys near it, and how to add a new one."""
    first = str(error).splitlines()[0]
    key = first.split("'")[1] if first.count("'") >= 2 else ""
    if not key:
        return flat(error)
    given = override_for(key, argv)
    deleting = first.startswith("Could not delete")
    known = known_config(config_name, [a for a in argv if a != given and "=" in a and not a.startswith("-")])
    node, walked, missing = known, [], key.split(".")
    while isinstance(node, dict) and missing and missing[0] in node:
        walked.append(missing[0])
        node = node[missing.pop(0)]
    where = ".".join(walked) or "the config"
    if not missing or not isinstance(node, dict):
        return flat(error)
    near = difflib.get_close_matches(missing[0], [str(k) for k in node], n=3, cutoff=0.6)
    prefix = ".".join(walked) + "." if walked else ""
    hint = f"; did you mean {' or '.join(prefix + n for n in near)}?" if near else ""
    keys = ", ".join(sorted(str(k) for k in node))
    if deleting:
        return f"{given}: {where} has no key '{missing[0]}' to delete{hint} (its keys: {keys})"
    return (f"{given}: {where} has no key '{missing[0]}'{hint} (its keys: {keys}); a new key needs a +: "
            f"+{given.lstrip('+')}")


def known_config(config_name: str | None, overrides: list[str]) -> dict:
    """The app's composed config with the other overrides (the typo left out), to list the keys near a typo;
    without them if those fail too, and empty if even that fails."""
    if config_name is None:
        return {}
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from aelab.config import CONFIG_DIR

    for attempt in (overrides, []):
        try:
            if GlobalHydra.instance().is_initialized():
                cfg = compose(config_name=config_name, overrides=attempt)
            else:
                with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                    cfg = compose(config_name=config_name, overrides=attempt)
            return OmegaConf.to_container(cfg, resolve=False)
        except Exception:  # noqa: BLE001 - the listing is a courtesy; the error line stands without it
            continue
    return {}


def path_error(error: OSError, argv: list[str]) -> str:
    """A folder the run cannot create or write (a run directory under a file, a read-only place)."""
    target = os.path.abspath(error.filename)
    named = [(k, v) for a in argv if "=" in a for k, v in [a.split("=", 1)] if k.lstrip("+") in PATH_KEYS and v]
    if os.environ.get("AELAB_OUTPUT_DIR"):
        named.append(("AELAB_OUTPUT_DIR", os.environ["AELAB_OUTPUT_DIR"]))
    which = next((f"{k.lstrip('+')}={v}: " for k, v in named
                  if target == os.path.abspath(v) or target.startswith(os.path.abspath(v) + os.sep)
                  or os.path.abspath(v).startswith(target + os.sep)), "")
    why = WHY.get(error.errno, error.strerror or type(error).__name__)
    return f"{which}cannot create or write {Path(target)} ({why}); choose a folder you can write to"
