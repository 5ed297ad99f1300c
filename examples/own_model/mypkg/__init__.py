"""Your own models, trained by aelab: conf/model/*.yaml name them by `_target_`."""

from mypkg.tiny import TinyAutoencoder

__all__ = ["TinyAutoencoder"]
