"""In-memory Lightning datamodules for the seed tasks (Fashion-MNIST, CIFAR-100 superclass)."""

from datamodules.base import DataFormatError, DataNotFoundError, InMemoryDataModule
from datamodules.cifar100 import CIFAR100SuperclassDataModule
from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.tensor_loader import TensorBatchLoader

__all__ = [
    "CIFAR100SuperclassDataModule",
    "DataFormatError",
    "DataNotFoundError",
    "FashionMNISTDataModule",
    "InMemoryDataModule",
    "TensorBatchLoader",
]
