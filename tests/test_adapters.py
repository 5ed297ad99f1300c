"""The behaviour aelab.adapters relies on in Lightning and Optuna, pinned: an upgrade that changes it
fails here, naming the adapter, instead of silently logging every step or double-counting steps."""

from __future__ import annotations

import types

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from aelab.adapters import attached_trainer, logs_this_step, step_uncounted, wrapped_attribute


def loader(n: int = 8):
    return DataLoader(TensorDataset(torch.randn(n, 3)), batch_size=1)


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, **kwargs)


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net, self.due = torch.nn.Linear(3, 1), []

    def training_step(self, batch, batch_idx):
        self.due.append(logs_this_step(self.trainer))
        return self.net(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_logs_this_step_follows_log_every_n_steps():
    module = Recorder()
    t = trainer(max_epochs=1, log_every_n_steps=3)
    t.fit(module, loader(8))
    assert hasattr(t._logger_connector, "should_update_logs")  # the private test still exists
    assert module.due == [(i + 1) % 3 == 0 for i in range(8)]


class TwoOptimizers(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt_a, opt_b = self.optimizers()
        for opt, net, counted in ((opt_b, self.b, False), (opt_a, self.a, True)):
            opt.zero_grad()
            self.manual_backward(net(batch[0]).square().mean())
            opt.step() if counted else step_uncounted(self.trainer, opt)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


def test_step_uncounted_steps_the_optimizer_without_counting_a_global_step():
    module = TwoOptimizers()
    before = module.b.weight.detach().clone()
    t = trainer(max_epochs=1)
    t.fit(module, loader(5))
    assert t.global_step == 5  # one per batch, as with one optimizer (LightningOptimizer.step would give 10)
    assert not torch.equal(module.b.weight, before)  # and the uncounted optimizer really stepped


def test_wrapped_attribute_wraps_inside_the_block_only():
    owner = types.SimpleNamespace(create=lambda x: x + 1)
    with wrapped_attribute(owner, "create", lambda original: lambda x: original(x) * 10):
        assert owner.create(1) == 20
    assert owner.create(1) == 2


def test_optuna_still_has_the_create_study_the_sweeper_wraps():
    import optuna

    assert callable(optuna.create_study)


def test_attached_trainer_is_none_outside_fit_and_the_trainer_inside():
    module = Recorder()
    assert attached_trainer(module) is None  # module.trainer would raise here
    seen = []
    module.training_step = lambda batch, batch_idx: seen.append(attached_trainer(module)) or module.net(batch[0]).sum()
    t = trainer(max_epochs=1, limit_train_batches=1)
    t.fit(module, loader(2))
    assert seen == [t]


def test_job_error_reads_what_a_failed_hydra_job_raised():
    from hydra.core.utils import JobReturn, JobStatus

    from aelab.adapters import job_error

    error = ValueError("boom")
    ret = JobReturn(overrides=["x=1"], status=JobStatus.FAILED, _return_value=error)
    assert job_error(ret) is error


def test_optuna_sweeper_keeps_its_implementation_as_sweeper():
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    from aelab.adapters import optuna_sweeper_impl

    sweeper = OptunaSweeper.__new__(OptunaSweeper)
    sweeper.sweeper = OptunaSweeperImpl.__new__(OptunaSweeperImpl)
    assert optuna_sweeper_impl(sweeper) is sweeper.sweeper
    assert "self.sweeper" in __import__("inspect").getsource(OptunaSweeper.__init__)  # where the plugin sets it


def test_optuna_sqlite_storage_opens_twice_under_sqlalchemy2(tmp_path):
    """Optuna 2.10 stamps its RDB schema version on an uncommitted connection; under SQLAlchemy 2 the stamp is lost
    and the second open fails (and the open transaction locks the file). The adapter commits it."""
    import optuna

    from aelab.adapters import optuna_sqlite_on_sqlalchemy2

    optuna_sqlite_on_sqlalchemy2()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    reopened = optuna.load_study(study_name="s", storage=storage)
    assert [t.params for t in reopened.trials] == [{"x": 0.5}]
