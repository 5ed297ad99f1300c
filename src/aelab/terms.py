"""Loss-term declarations (`Term`, part of the model contract, aelab.models.contract) and their record on disk:
`terms.json` beside a run's metrics.json holds its model's declaration, so tools that read run directories
(aelab-compare, the results report) show every term a model logs without knowing any model. No torch here: the
readers stay light."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from aelab.errors import ConfigError
from aelab.runs import read_json, write_json_atomic

TERMS_FILE = "terms.json"
# what the Lightning module logs for every model, whatever its terms: its objective and the output's image measures
SHARED_MEASURES = ("loss", "bce", "mse", "psnr", "ssim")
STAGES = ("train", "val", "test")
Reduce = Literal["mean", "max", "min", "sum"]
Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Term:
    """One quantity a model's step reports besides `loss`, logged as `<stage>/<name>`.

    description  what it is, in a reader's words (its weight in `loss`, its units): shown in CUSTOM SCALARS
    reduce       how a stage's batches make its epoch value: "mean" (weighted by batch size), "max", "min", "sum"
    better       "lower" / "higher" for a quantity to rank runs by, None for a diagnostic
    stages       the stages whose steps report it (a term only training computes lists ("train",))
    """

    name: str
    description: str
    reduce: Reduce = "mean"
    better: Better | None = "lower"
    stages: tuple[str, ...] = STAGES

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ConfigError(f"term name {self.name!r} must be an identifier (it becomes the tag <stage>/{self.name})")
        if self.name == "loss":
            raise ConfigError("term name 'loss' is reserved for the minimised objective (LossTerms.loss)")
        if self.reduce not in ("mean", "max", "min", "sum"):
            raise ConfigError(f"term {self.name}: reduce={self.reduce!r} is not one of ['mean', 'max', 'min', 'sum']")
        if not set(self.stages) <= set(STAGES):
            raise ConfigError(f"term {self.name}: stages {list(self.stages)} are not among {list(STAGES)}")

    def record(self) -> dict:
        """The declaration as JSON (terms.json beside a run's metrics.json)."""
        return {**asdict(self), "stages": list(self.stages)}


def terms_record(terms: tuple[Term, ...], model_name: str) -> dict:
    return {"model": model_name, "terms": [t.record() for t in terms]}


def terms_from_record(record: dict | None) -> tuple[Term, ...]:
    """The declaration terms.json holds (empty for a run written without one)."""
    out = []
    for t in (record or {}).get("terms", []):
        try:
            out.append(Term(name=t["name"], description=t.get("description", ""), reduce=t.get("reduce", "mean"),
                            better=t.get("better", "lower"), stages=tuple(t.get("stages", STAGES))))
        except (KeyError, TypeError, ConfigError):
            continue  # a hand-edited or foreign record: keep what reads
    return tuple(out)


def write_terms(run_dir: str | Path, model) -> None:
    write_json_atomic(Path(run_dir) / TERMS_FILE, terms_record(tuple(model.terms), type(model).__name__))


def read_terms(run_dir: str | Path) -> tuple[Term, ...]:
    """The run's declared terms; empty for a run directory without terms.json."""
    return terms_from_record(read_json(Path(run_dir) / TERMS_FILE))


def metric_names(terms, stage: str = "test") -> list[str]:
    """`<stage>/<name>` of every term declared for `stage`, in declaration order."""
    return [f"{stage}/{t.name}" for t in terms if stage in t.stages]


def recorded_terms(metrics: dict) -> list[str]:
    """The term names of a run recorded before runs kept terms.json: what it logged under both train/ and test/
    besides the measures every run logs."""
    names = [k.split("/", 1)[1] for k in metrics if k.startswith("test/")]
    return [n for n in names if f"train/{n}" in metrics and n not in SHARED_MEASURES]
