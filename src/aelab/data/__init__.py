"""Datamodules: one file per dataset, all sharing `ImageDataModule` (seeded val split, in-memory uint8 batches)."""

from aelab.data.base import DataSpec, EpochBatchSampler, ImageDataModule, Split, to_float
from aelab.data.binarized_mnist import BinarizedMNISTDataModule
from aelab.data.dsprites import DSpritesDataModule
from aelab.data.flowers import FlowersDataModule
from aelab.data.image_folder import ImageFolderDataModule
from aelab.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = ["BinarizedMNISTDataModule", "DataSpec", "DSpritesDataModule", "EpochBatchSampler", "FashionMNISTDataModule", "FlowersDataModule",
           "ImageDataModule", "ImageFolderDataModule", "MNISTDataModule", "Split", "to_float"]
