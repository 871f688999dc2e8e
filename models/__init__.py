"""Networks (plain nn.Modules in `models.components`) and the LightningModules that train them."""

from models.classifier import ClassificationModule, ImageClassifier, ScratchClassifier

__all__ = ["ClassificationModule", "ImageClassifier", "ScratchClassifier"]
