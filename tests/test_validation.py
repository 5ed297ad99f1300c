"""aelab.validation: config values checked against constructor annotations, with one-line errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
from annotated_types import Ge, Le
from omegaconf import OmegaConf

from aelab.errors import ConfigError
from aelab.types import Fraction, NonNegativeFloat, PositiveInt
from aelab.validation import _hints, check_values, describe

Probability = Annotated[float, Ge(0), Le(1)]  # a closed interval, beside Fraction's open one


class Base:
    def __init__(self, size: PositiveInt = 1, rate: float = 0.1, flag: bool = False, name: str = "x",
                 shape: tuple[float, float] = (1.0, 1.0)):
        pass


class Child(Base):
    """Forwards *args/**kwargs to Base, as our models do."""

    def __init__(self, *args, hidden: int = 8, widths: list[PositiveInt] = (4,), latent: int | None = None,
                 mode: Literal["area", "bilinear"] = "area", root: str | Path = ".", net: torch.nn.Module = None,
                 anything=None, p: Probability = 0.5, frac: Fraction = 0.5, wd: NonNegativeFloat = 0.0, **kwargs):
        super().__init__(*args, **kwargs)


class Open:
    def __init__(self, size: int = 1, **kwargs: object):  # **kwargs goes nowhere we can follow
        pass


def refused(values: dict, what: str = "model") -> str:
    with pytest.raises(ConfigError) as info:
        check_values(Child, values, what)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("key, value, expected", [
    ("hidden", [512], "model.hidden=[512] is not allowed: expected an integer"),  # a list for an int
    ("rate", "0.1", "model.rate='0.1' is not allowed: expected a number"),  # a string for a float
    ("hidden", True, "model.hidden=True is not allowed: expected an integer"),  # a bool for an int
    ("size", -3, "model.size=-3 is not allowed: expected an integer >= 1"),  # negative PositiveInt (in the base)
    ("size", 0, "model.size=0 is not allowed: expected an integer >= 1"),
    ("hidden", 2.0, "model.hidden=2.0 is not allowed: expected an integer"),  # a float for an int
    ("rate", True, "model.rate=True is not allowed: expected a number"),  # a bool for a float
    ("flag", 1, "model.flag=1 is not allowed: expected true or false"),
    ("flag", "yes", "model.flag='yes' is not allowed: expected true or false"),
    ("name", 3, "model.name=3 is not allowed: expected a string"),
    ("widths", [4, 0], "model.widths=[4, 0] is not allowed: expected a list of integers >= 1"),
    ("widths", 4, "model.widths=4 is not allowed: expected a list of integers >= 1"),
    ("widths", "4", "model.widths='4' is not allowed: expected a list of integers >= 1"),
    ("latent", "8", "model.latent='8' is not allowed: expected null or an integer"),
    ("mode", "nearest", "model.mode='nearest' is not allowed: expected one of ['area', 'bilinear']"),
    ("shape", [1.0], "model.shape=[1.0] is not allowed: expected a list of 2 numbers"),
    ("root", 5, "model.root=5 is not allowed: expected a string or a path"),
    ("p", 1.5, "model.p=1.5 is not allowed: expected a number >= 0 and <= 1"),
    ("frac", 1.0, "model.frac=1.0 is not allowed: expected a number > 0 and < 1"),
    ("wd", -0.1, "model.wd=-0.1 is not allowed: expected a number >= 0"),
])
def test_wrong_values_are_refused_in_one_line(key, value, expected):
    assert refused({key: value}) == expected


def test_omegaconf_values_are_named_as_plain_python():
    cfg = OmegaConf.create({"_target_": "x.Child", "hidden": [512], "rate": 0.5})
    with pytest.raises(ConfigError, match=r"^data\.hidden=\[512\] is not allowed: expected an integer$"):
        check_values(Child, cfg, "data")


@pytest.mark.parametrize("values", [
    {"rate": 1},  # an int for a float
    {"rate": 0.5, "hidden": 3, "size": 1, "flag": True, "name": "n"},
    {"widths": (4, 8)},  # a tuple for list[int]
    {"widths": [4, 8], "shape": [1, 2.5]},  # a list for tuple[float, float]
    {"latent": None},
    {"latent": 4},
    {"mode": "bilinear"},
    {"root": "data"}, {"root": Path("data")},
    {"p": 0}, {"p": 1}, {"frac": 0.25}, {"wd": 0},
    {"anything": [object()], "unknown_key": "ignored here"},  # unannotated / not a parameter: not checked
    {"net": "not a module"}, {"net": 3},  # nn.Module: nothing a config value can be; left to the constructor
    {"net": {"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 1}},  # Hydra builds it
    {"latent": {"_target_": "builtins.int", "_args_": ["3"]}, "widths": [4, {"_target_": "builtins.int"}]},
    {"widths": "???"},  # missing: Hydra says so in its own words
])
def test_valid_and_unchecked_values_pass(values):
    check_values(Child, values, "model")


def test_omegaconf_containers_pass_and_interpolations_resolve():
    cfg = OmegaConf.create({"hidden": "${n}", "widths": [4, "${n}"], "shape": [1, 2], "n": 8})
    check_values(Child, cfg, "model")
    cfg.n = 0
    with pytest.raises(ConfigError, match=r"^model\.widths=\[4, 0\] is not allowed"):
        check_values(Child, cfg, "model")
    check_values(Child, {"widths": OmegaConf.create([1, 2]), "latent": None}, "model")


def annotations_of(target):
    """What check_values reads: the annotated keyword parameters, None when a **kwargs chain cannot be followed."""
    hints, complete = _hints(target)
    return dict(hints) if complete else None


def test_annotations_follow_kwargs_up_the_bases():
    hints = annotations_of(Child)
    assert hints["hidden"] is int and hints["rate"] is float and hints["size"] == PositiveInt
    assert "anything" not in hints and "args" not in hints and "kwargs" not in hints
    assert annotations_of(Open) is None  # **kwargs that cannot be followed
    with pytest.raises(ConfigError, match=r"^open\.size='1' is not allowed: expected an integer$"):
        check_values(Open, {"size": "1", "other": "anything"}, "open")  # known keys are still checked

    def fn(a: int, b: list[float] | None = None):
        pass

    assert annotations_of(fn) == {"a": int, "b": list[float] | None}

    def partly_unresolvable(a: int, b: NameOnlyForTypeCheckers = None):  # noqa: F821
        pass

    assert annotations_of(partly_unresolvable) == {"a": int}


def test_describe():
    assert describe(dict[str, int]) == "a mapping of strings to integers"
    assert describe(tuple[int, str]) == "a list of 2 values (an integer, a string)"
    assert describe(list[list[int]] | None) == "null or a list of lists of integers"


def test_lightning_trainer():
    import lightning as L

    check_values(L.Trainer, {"max_epochs": 2, "accelerator": "cpu", "devices": 1, "precision": "bf16-mixed",
                             "deterministic": "warn", "limit_train_batches": 0.5, "max_time": {"hours": 1},
                             "default_root_dir": "runs", "gradient_clip_val": 1}, "trainer")
    with pytest.raises(ConfigError) as info:
        check_values(L.Trainer, {"max_epochs": "two"}, "trainer")
    assert str(info.value) == "trainer.max_epochs='two' is not allowed: expected null or an integer"
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator=3 is not allowed: expected a string$"):
        check_values(L.Trainer, {"accelerator": 3}, "trainer")  # Union[str, Accelerator]: the str part is checked
    with pytest.raises(ConfigError, match=r"^trainer\.precision=17 is not allowed: expected null or one of \[64,"):
        check_values(L.Trainer, {"precision": 17}, "trainer")


def test_torch_optimizer_and_logger():
    from lightning.pytorch.loggers import TensorBoardLogger

    check_values(torch.optim.Adam, {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0}, "optimizer")
    with pytest.raises(ConfigError, match=r"^optimizer\.lr='fast' is not allowed: expected a number$"):
        check_values(torch.optim.Adam, {"lr": "fast"}, "optimizer")  # float | Tensor: the Tensor part drops out
    check_values(TensorBoardLogger, {"save_dir": "runs", "name": "x", "version": 3}, "logger")
    with pytest.raises(ConfigError, match=r"^logger\.log_graph='no' is not allowed: expected true or false$"):
        check_values(TensorBoardLogger, {"log_graph": "no"}, "logger")


def test_fast_after_the_first_call():
    import lightning as L

    values = OmegaConf.create({"max_epochs": 2, "accelerator": "cpu", "devices": 1, "precision": "32-true",
                               "deterministic": False, "limit_train_batches": 1.0, "log_every_n_steps": 10,
                               "default_root_dir": "runs", "enable_progress_bar": False, "max_time": {"hours": 1}})
    check_values(L.Trainer, values, "trainer")
    start = time.perf_counter()
    for _ in range(10):
        check_values(L.Trainer, values, "trainer")
    assert (time.perf_counter() - start) / 10 < 0.005
