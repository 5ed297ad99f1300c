"""Hydra instantiates sweepers and launchers only from classes defined in the `hydra_plugins` namespace package,
so aelab's Optuna sweeper (implemented in aelab.sweep) is declared here. `src/hydra_plugins` has no __init__.py on
purpose: it merges with the installed plugins' namespace."""

from aelab.sweep import OptunaSweeper as _OptunaSweeper


class FailureTolerantOptunaSweeper(_OptunaSweeper):
    """hydra-optuna-sweeper whose failed trials (NaN, exceptions) are recorded as FAIL; see aelab.sweep."""
