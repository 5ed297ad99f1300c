"""aelab as an installed library: the configs ship inside the package (pkg://aelab.conf) for an editable install
and a wheel alike, a wheel runs from an empty directory and writes there, a project's own configs and model class
(examples/own_model) train through --config-dir, and a run's logs hold each Lightning message once."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from aelab.config import CONFIG_DIR, REPO_ROOT
from conftest import DATA_DIR

BIN = Path(sys.executable).parent
EXAMPLE = REPO_ROOT / "examples" / "own_model"
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf")  # what setuptools reads to build aelab


def checkout_configs() -> dict[str, list[str]]:
    """Every config group in the checkout's conf/ ("" is the top level), with its options."""
    return {"" if d == CONFIG_DIR else d.relative_to(CONFIG_DIR).as_posix(): sorted(p.stem for p in d.glob("*.yaml"))
            for d in [CONFIG_DIR, *CONFIG_DIR.rglob("*")] if d.is_dir() and d.name != "__pycache__"}


def hydra_configs(groups: list[str]) -> dict[str, list[str]]:
    """What Hydra finds in each group when it composes from pkg://aelab.conf, as aelab-train and aelab-eval do
    (this function also runs on its own inside the wheel's virtual environment)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("aelab.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        found = {group: loader.get_group_options(group) for group in groups}
    GlobalHydra.instance().clear()
    return found


def assert_every_config_found(found: dict[str, list[str]]) -> None:
    for group, options in checkout_configs().items():
        assert set(options) <= set(found[group]), f"group {group!r}: {sorted(set(options) - set(found[group]))} missing"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without aelab's variables and PYTHONPATH (no checkout on the path), real data, no .pyc
    files written into the checkout's examples."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AELAB_") and k != "PYTHONPATH"}
    return {**env, "AELAB_DATA_DIR": str(DATA_DIR), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command with stdout and stderr in one stream, as a terminal or a job's log file shows them."""
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env or clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def test_editable_install_reads_the_checkouts_configs():
    """`pip install -e .` (README, CI) maps aelab.conf to the checkout's conf/: edits there take effect at once."""
    import aelab.conf

    assert Path(aelab.conf.__file__).parent == REPO_ROOT / "conf" == CONFIG_DIR
    assert_every_config_found(hydra_configs(list(checkout_configs())))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """aelab's wheel, built from a copy of the working tree (a build in place would leave build/ in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    tree = work / "aelab"
    for name in BUILD_INPUTS:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(src, tree / name)
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", work / "dist", tree], cwd=work)
    assert done.returncode == 0, done.stdout[-3000:]
    (whl,) = (work / "dist").glob("aelab-*.whl")
    return whl


def test_wheel_holds_every_module_and_config(wheel):
    """Every module of src/ and every file of conf/ is in the wheel: pyproject.toml lists the packages (the
    conf/ -> aelab.conf mapping rules out discovery), so a new package or config group must be added there."""
    names = set(zipfile.ZipFile(wheel).namelist())
    src = REPO_ROOT / "src"
    modules = {str(p.relative_to(src)) for p in src.rglob("*.py") if "egg-info" not in str(p)}
    configs = {f"aelab/conf/{p.relative_to(CONFIG_DIR)}" for p in CONFIG_DIR.rglob("*")
               if p.suffix in (".yaml", ".py") and "__pycache__" not in p.parts}
    assert "aelab/conf/train.yaml" in configs and "aelab/conf/__init__.py" in configs
    assert not (modules | configs) - names, f"missing from the wheel: {sorted((modules | configs) - names)}"


@pytest.mark.slow
def test_wheel_installs_and_trains_from_an_empty_directory(wheel, tmp_path):
    """The wheel in a fresh virtual environment (its dependencies from this one's site-packages, not the checkout
    nor its editable hook): configs come from the installed package, outputs land in ./outputs of an empty
    directory, and no git commit is recorded for an installed copy."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # A .pth adds this environment's site-packages as a plain path: its own .pth files, among them the editable
    # hook that maps aelab to the checkout, are not processed from there.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = venv / "bin" / "python"
    done = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]

    empty = tmp_path / "project"
    empty.mkdir()
    probe = (f"import json, aelab, aelab.config\n{inspect.getsource(hydra_configs)}\n"
             f"print(json.dumps([aelab.__file__, str(aelab.config.REPO_ROOT), hydra_configs({list(checkout_configs())!r})]))")
    done = run([python, "-c", probe], cwd=empty)
    assert done.returncode == 0, done.stdout[-3000:]
    module_file, repo_root, found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(module_file).is_relative_to(venv), module_file
    assert repo_root == "None"
    assert_every_config_found(found)

    done = run([venv / "bin" / "aelab-train", "trainer=debug"], cwd=empty)
    assert done.returncode == 0, done.stdout[-3000:]
    assert {p.name for p in empty.iterdir()} <= {"outputs", ".cache"}
    (run_dir,) = (empty / "outputs" / "runs").glob("*/*")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "succeeded"
    assert "test/psnr" in json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "environment.json").read_text())["git_commit"] is None


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> tuple[Path, str]:
    """examples/own_model trained a few batches as its README says (its conf/ through --config-dir, mypkg on
    PYTHONPATH), from another directory, with the progress bar on: the run directory and the console output."""
    work = tmp_path_factory.mktemp("own_model")
    env = clean_env(PYTHONPATH=str(EXAMPLE), AELAB_OUTPUT_DIR=str(work / "outputs"), AELAB_CACHE_DIR=str(work / "cache"))
    done = run([BIN / "aelab-train", "--config-dir", EXAMPLE / "conf", "experiment=tiny_mnist", "trainer=debug",
                "trainer.enable_progress_bar=true", f"hydra.run.dir={work / 'run'}"], cwd=work, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    return work / "run", done.stdout


def test_own_model_and_presets_train_through_config_dir(example_run):
    """The user's experiment preset (in the defaults list: override /model: tiny) selects the user's model beside
    aelab's data and corruption groups."""
    from omegaconf import OmegaConf

    run_dir, _ = example_run
    assert json.loads((run_dir / "status.json").read_text())["state"] == "succeeded"
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.model._target_ == "mypkg.TinyAutoencoder" and cfg.model.latent_dim == 16
    assert list(cfg.corruption) == ["gaussian_noise"] and cfg.epochs == 3
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    assert (choices.model, choices.experiment, choices.data) == ("tiny", "tiny_mnist", "mnist")


def test_each_lightning_message_and_progress_update_is_logged_once(example_run):
    """Lightning's messages reach train.log once and the console once (Lightning's own stderr handler used to
    print a second copy); the progress bar draws each training update once (it drew count, then metrics)."""
    run_dir, console = example_run
    assert (run_dir / "train.log").read_text().count("GPU available") == 1
    assert console.count("GPU available") == 1
    # trainer=debug: 5 training batches, so the bar's only update is 5/5 (then validation adds val/loss); text
    # mode reads each carriage return as a line end, so each draw is a line
    draws = [s for s in console.splitlines() if s.startswith("Epoch 0:") and "5/5" in s and "val/loss" not in s]
    assert len(draws) == 1 and "train/loss=" in draws[0], draws


def test_compose_gives_the_config_the_cli_would_run(tmp_path):
    """aelab.config.compose: what a notebook or script calls before train(cfg); the Hydra state train() reads is set
    for the given run directory, and the hydra node is dropped unless asked for."""
    from hydra.core.hydra_config import HydraConfig

    from aelab.config import compose

    cfg = compose(["experiment=ae_latent32_mnist", "model.latent_dim=16"], output_dir=tmp_path)
    assert "hydra" not in cfg and cfg.model.latent_dim == 16 and cfg.model._target_.endswith("ResNetAutoencoder")
    assert HydraConfig.get().runtime.output_dir == str(tmp_path)
    assert HydraConfig.get().runtime.choices["experiment"] == "ae_latent32_mnist"
    assert compose(["model.latent_dim=16"], keep_hydra=True).hydra.job.name


def test_readme_notebook_recipe_trains_from_a_composed_config(tmp_path):
    """README's 'From Python' recipe, shrunk: compose, train(cfg, RunDir), then the model's public methods."""
    import torch

    from aelab.config import compose
    from aelab.runs import RunDir
    from aelab.train import train

    run = tmp_path / "notebook"
    cfg = compose(["experiment=ae_latent32_mnist", "trainer=debug", "callbacks.probe=null",
                   f"paths.data_dir={DATA_DIR}"], output_dir=run)
    result = train(cfg, RunDir(run))
    assert 0 < result.metrics["test/psnr"] < 100 and (run / "tensorboard").is_dir()
    assert result.module.model.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 32)
