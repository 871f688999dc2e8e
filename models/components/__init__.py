"""Plain ``nn.Module`` networks, trained by the LightningModules in ``models.classifier``.

``MLP`` (S0.2, S1.2, S4), ``LeNet`` (S0.3), ``FourBlockCNN`` (S1.3), ``ConvNet`` (S2) and
``ScratchTwoLayerNet`` (S1.1, S3, S4; hand-written backward pass, no autograd).
"""

from models.components.cnn import ConvNet, FourBlockCNN, LeNet, conv_output_size
from models.components.mlp import MLP
from models.components.scratch import ScratchTwoLayerNet

__all__ = ["MLP", "ConvNet", "FourBlockCNN", "LeNet", "ScratchTwoLayerNet", "conv_output_size"]
