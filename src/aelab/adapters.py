"""Every place aelab relies on a private API or patches a library, in one module; tests/test_adapters.py pins
the behaviour each one relies on, so a Lightning or Optuna upgrade that changes it fails there first,
not deep inside a run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch


def logs_this_step(trainer) -> bool:
    """Whether Lightning writes this training step's logged values to the logger (every log_every_n_steps).
    Lightning keeps the test private (`_logger_connector.should_update_logs`); without it, every step counts."""
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def attached_trainer(module):
    """The Trainer a LightningModule is attached to, or None: `module.trainer` raises when there is none (a module
    used outside fit/test), so the check reads Lightning's private `_trainer`."""
    return getattr(module, "_trainer", None)


def step_uncounted(trainer, optimizer: torch.optim.Optimizer) -> None:
    """Step an optimizer through the strategy (precision plugin included) but not through LightningOptimizer.step,
    which counts every call in trainer.global_step: a second optimizer per batch would then double every step
    count (max_steps, warm-ups, checkpoint intervals, log_every_n_steps)."""
    trainer.strategy.optimizer_step(getattr(optimizer, "optimizer", optimizer), closure=lambda: None)


@contextmanager
def wrapped_attribute(owner: Any, name: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """Replace `owner.name` by `wrap(original)` inside the block and restore it afterwards (used to wrap
    optuna.create_study, which hydra-optuna-sweeper calls with no hook of its own)."""
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def job_error(job_return) -> object:
    """What a failed Hydra job raised: JobReturn keeps it in the private `_return_value` (its public `return_value`
    re-raises it)."""
    return getattr(job_return, "_return_value", None)


def optuna_sweeper_impl(sweeper):
    """hydra-optuna-sweeper's OptunaSweeper delegates to the implementation object it keeps as `sweeper` (its
    launcher, sweep_dir and sweep()); the attribute is undocumented."""
    return sweeper.sweeper


def optuna_sqlite_on_sqlalchemy2() -> None:
    """Optuna 2.10's RDBStorage stamps its schema version on a connection it never commits: SQLAlchemy 2 no longer
    autocommits, so the stamp is lost, the open transaction locks an SQLite file, and the next open of the same
    storage fails its version check. The stamp is written in a transaction that commits (the private
    `_VersionManager._set_alembic_revision`); idempotent."""
    import alembic.migration
    from optuna.storages._rdb.storage import _VersionManager

    if getattr(_VersionManager._set_alembic_revision, "aelab_commits", False):
        return

    def set_alembic_revision(self, revision: str) -> None:
        with self.engine.begin() as connection:
            alembic.migration.MigrationContext.configure(connection).stamp(self._create_alembic_script(), revision)

    set_alembic_revision.aelab_commits = True  # type: ignore[attr-defined]
    _VersionManager._set_alembic_revision = set_alembic_revision
