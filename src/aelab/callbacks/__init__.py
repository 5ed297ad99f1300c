"""Lightning callbacks that write figures and images to TensorBoard."""

from aelab.callbacks.images import ReconstructionGrid

__all__ = ["ReconstructionGrid"]
