"""Hydra's own errors, through aelab's entry wrapper (aelab.cli): one `aelab-<cmd>: error: ...` line naming the key
or path and the fix, exit code 1, no traceback and no HYDRA_FULL_ERROR hint. The console scripts' main() runs in
this process (Hydra stops before any run starts); one case goes through a real subprocess."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aelab import compare, evaluate, train
from aelab.config import compose
from conftest import DATA_DIR

BIN = Path(sys.executable).parent


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli(main, *args) -> (exit code, stderr) of a console script's main() with these arguments."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def _run(main, *args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["aelab", *args])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code, capsys.readouterr().err

    yield _run
    root.handlers[:], root.level = handlers, level  # Hydra configures logging once a config composed
    assert "HYDRA_FULL_ERROR" not in os.environ  # the wrapper restores the environment


def test_an_unknown_key_names_the_nearest_keys_and_how_to_add_one(cli):
    code, err = cli(train.main, "model.latent_dimm=8")
    assert code == 1
    assert err == ("aelab-train: error: model.latent_dimm=8: model has no key 'latent_dimm'; did you mean "
                   "model.latent_dim? (its keys: _target_, batch_norm, channels, latent_dim, recon_loss, reduction); "
                   "a new key needs a +: +model.latent_dimm=8\n")


def test_a_typo_in_a_group_name_is_named_where_it_is(cli):
    code, err = cli(train.main, "trainer=debug", "modle.latent_dim=8")
    assert code == 1 and err.startswith("aelab-train: error: modle.latent_dim=8: the config has no key 'modle'; "
                                        "did you mean model? (its keys: callbacks, ")
    code, err = cli(train.main, "~model.foo")
    assert err.startswith("aelab-train: error: ~model.foo: model has no key 'foo' to delete (its keys: _target_,")


def test_an_unknown_option_lists_the_options_and_the_nearest(cli):
    from aelab.config import CONFIG_DIR

    code, err = cli(train.main, "model=vae_con")
    options = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")))
    assert code == 1 and err.startswith(
        f"aelab-train: error: model=vae_con: Could not find 'model/vae_con'; available options in 'model': {options}; "
        "did you mean model=vae_conv or ")
    assert err.count("\n") == 1


def test_a_value_the_grammar_cannot_read_gets_the_quoting_that_works(cli):
    code, err = cli(train.main, "data.data_dir=/données/mnist")
    assert code == 1 and err.startswith("aelab-train: error: data.data_dir=/données/mnist: Hydra's override grammar "
                                        "cannot read this value unquoted")
    fix = "'data.data_dir=\"/données/mnist\"'"
    assert err.endswith(f"quote it, in double quotes inside the shell's single ones: {fix}\n")
    assert compose([fix.strip("'")]).data.data_dir == "/données/mnist"  # the advice composes


def test_a_value_the_shell_split_at_a_space_gets_the_quoting_that_works(cli):
    code, err = cli(train.main, "data.data_dir=/my", "data")  # `aelab-train data.data_dir=/my data`, unquoted
    assert code == 1 and err == ("aelab-train: error: 'data' is not an override (KEY=VALUE); if it is the rest of "
                                 "data.data_dir's value, quote the whole override for the shell: "
                                 "'data.data_dir=/my data'\n")
    assert compose(["data.data_dir=/my data"]).data.data_dir == "/my data"


@pytest.mark.parametrize("under,why", [("file", "a file of that name is in the way"),
                                       ("file/run", "a part of that path is a file, not a folder")])
def test_a_run_directory_that_cannot_be_a_directory_is_one_line(cli, tmp_path, under, why):
    (tmp_path / "file").write_text("not a folder")
    target = tmp_path / under
    code, err = cli(train.main, "trainer=debug", f"hydra.run.dir={target}")
    assert code == 1 and err == (f"aelab-train: error: hydra.run.dir={target}: cannot create or write {target} "
                                 f"({why}); choose a folder you can write to\n")


def test_a_capture_mode_that_does_not_exist_is_one_line(cli):
    code, err = cli(train.main, "trainer=debug", "capture_step=always")
    assert (code, err) == (1, "aelab-train: error: capture_step='always': allowed are true, false and auto\n")


def test_eval_names_a_missing_checkpoint_and_a_model_override(cli, tmp_path):
    code, err = cli(evaluate.main, "model.latent_dim=3")
    assert code == 1 and err == ("aelab-eval: error: model.latent_dim=3: the model comes from the checkpoint "
                                 "(ckpt_path); aelab-eval takes data=, corruption=, seed=, trainer= and callbacks=\n")
    code, err = cli(evaluate.main, "trainer=debug", f"hydra.run.dir={tmp_path / 'eval'}")  # no ckpt_path=
    assert code == 1 and err == ("aelab-eval: error: ckpt_path is required: aelab-eval "
                                 "ckpt_path=RUN/checkpoints/best.ckpt (a file that aelab-train wrote)\n")


def test_compare_goes_through_the_same_wrapper(cli, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "report" / "table.csv"))

    monkeypatch.setattr(compare, "compare", broken)  # a --out folder it may not write
    (tmp_path / "sweep").mkdir()
    code, err = cli(compare.main, str(tmp_path / "sweep"), "--out", str(tmp_path / "report"))
    assert code == 1 and err == (f"aelab-compare: error: cannot create or write {tmp_path / 'report' / 'table.csv'} "
                                 "(no permission to write there); choose a folder you can write to\n")


def test_a_users_mistake_from_the_real_command_line_is_one_line_without_hydras_hint(tmp_path):
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "AELAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([str(BIN / "aelab-train"), "trainer=debug", "model.latent_dimm=8"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(
        "aelab-train: error: model.latent_dimm=8: model has no key 'latent_dimm'; did you mean model.latent_dim?")
    assert not (tmp_path / "outputs").exists()
    # HYDRA_FULL_ERROR=1, as Hydra documents it, still gives the full traceback
    done = subprocess.run([str(BIN / "aelab-train"), "trainer=debug", "model.latent_dimm=8"], capture_output=True,
                          text=True, env={**env, "HYDRA_FULL_ERROR": "1"}, timeout=300)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigCompositionException" in done.stderr
