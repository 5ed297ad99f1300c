"""Lightning callbacks that write figures and images to TensorBoard."""

from aelab.callbacks.baselines import Baselines
from aelab.callbacks.figures import (ClassSamples, LatentGrid, LatentInterpolation, LatentNoise, LatentScatter,
                                     NoiseInput, PriorSamples)
from aelab.callbacks.guards import FiniteLoss, SaveOnInterrupt, TrainingDiverged
from aelab.callbacks.images import ReconstructionGrid
from aelab.callbacks.nll import ImportanceSampledNLL
from aelab.callbacks.probe import EmbeddingProbe
from aelab.callbacks.samples import SampleQuality
from aelab.callbacks.throughput import Throughput

__all__ = ["Baselines", "ClassSamples", "EmbeddingProbe", "LatentGrid", "LatentInterpolation", "LatentNoise", "LatentScatter",
           "NoiseInput", "PriorSamples", "FiniteLoss", "SaveOnInterrupt", "TrainingDiverged", "ImportanceSampledNLL", "ReconstructionGrid", "Throughput"]
