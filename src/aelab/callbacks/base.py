"""What every aelab callback that applies to some models only shares: it says why not.

`why_not(model)` reads the model's declared capabilities (aelab.models.contract) and returns the reason the callback
does not apply, or None. aelab.build.build_callbacks leaves such callbacks out of a run and logs each reason once
(Lightning would otherwise call them at every step's hooks); callbacks built by hand ask the same method at run time.
`metrics` names what the callback logs, so HPARAMS declares those columns from the configured callbacks alone.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import lightning as L

log = logging.getLogger("aelab")


class ModelCallback(L.Callback):
    metrics: ClassVar[tuple[str, ...]] = ()  # the tags it logs (HPARAMS metric columns)

    def why_not(self, model) -> str | None:
        """Why this callback does not apply to `model`, from its declared capabilities; None when it does."""
        return None

    def applies(self, model) -> bool:
        """why_not(model) is None; otherwise the reason is logged, once per callback and reason."""
        why = self.why_not(model)
        if why is None:
            return True
        told = self.__dict__.setdefault("_told", set())
        if why not in told:
            told.add(why)
            log.info("%s: %s", type(self).__name__, why)
        return False
