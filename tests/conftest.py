"""Shared fixtures: real data from ../shared/data (or AELAB_DATA_DIR), the real configs composed in-process.

Every test gets its own output and cache folders; nothing is written into the data folder or the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from aelab.config import REPO_ROOT, compose

DATA_DIR = Path(os.environ.get("AELAB_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
FAST = ["trainer=debug"]  # a few batches on CPU


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"real test data not found in {DATA_DIR}: set AELAB_DATA_DIR to a folder holding MNIST/raw/*.gz")
    return DATA_DIR


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared by the session: flowers decode once


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, cache_dir):
    monkeypatch.setenv("AELAB_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("AELAB_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AELAB_OUTPUT_DIR", str(tmp_path / "outputs"))
    yield
    GlobalHydra.instance().clear()


def compose_cfg(overrides: list[str] = (), config_name: str = "train", output_dir: Path | None = None) -> DictConfig:
    """The real config as the CLI composes it, the hydra node kept (tests read it; run_app_inprocess drops it)."""
    return compose(overrides, config_name, output_dir, keep_hydra=True)


def run_app_inprocess(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """Run aelab-train / aelab-eval in this process (imports are paid once per session)."""
    from aelab.evaluate import evaluate
    from aelab.runs import run_app
    from aelab.train import train

    cfg = compose_cfg(overrides, config_name, output_dir)
    task = train if config_name == "train" else evaluate
    with open_dict(cfg):
        del cfg["hydra"]
    return run_app(task, cfg, f"aelab-{config_name}")


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under folder with its modification time and bytes: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_train(tmp_path):
    """run_train(overrides, name="run") -> run directory after an in-process aelab-train."""

    def _run(overrides: list[str] = (), name: str = "run", config_name: str = "train") -> Path:
        out = tmp_path / name
        run_app_inprocess([*FAST, *overrides], out, config_name)
        return out

    return _run


def read_events(run_dir: Path):
    """The run's TensorBoard events (all files of its tensorboard/ folder), images and all."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc
