"""Networks (plain nn.Modules in `models.components`) and the LightningModules that train them."""

from models.classifier import (
    ClassificationModule,
    ConvNetClassifier,
    FourBlockCNNClassifier,
    ImageClassifier,
    LeNetClassifier,
    MLPClassifier,
    ScratchClassifier,
)

__all__ = [
    "ClassificationModule",
    "ConvNetClassifier",
    "FourBlockCNNClassifier",
    "ImageClassifier",
    "LeNetClassifier",
    "MLPClassifier",
    "ScratchClassifier",
]
