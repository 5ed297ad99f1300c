"""Your own models, trained by aelab: conf/model/*.yaml name them by `_target_`."""

from mypkg.ladder import LadderVAE
from mypkg.tiny import TinyAutoencoder

__all__ = ["LadderVAE", "TinyAutoencoder"]
