"""Convolutional classifiers and the layer output-size formula.

* :class:`LeNet` - S0.3, the small CNN on the CIFAR-100 superclass (LeNet-5 style
  default: conv 3->6 k5, pool, conv 6->16 k5, pool, FC 400-120-84-5).
* :class:`FourBlockCNN` - S1.3, four Conv-act-MaxPool-BatchNorm-Dropout blocks on
  Fashion-MNIST.
* :class:`ConvNet` - S2, a configurable CNN whose (kernel, stride, padding), batch norm
  and dropout are hyperparameters (S2's choice: (2, 2, 0), no batch norm, dropout 0.1).
* :func:`conv_output_size` - floor((in - k + 2p) / s) + 1, also used to answer the S1
  theory questions on layer output sizes.

Flattened feature sizes are computed from ``input_size`` instead of being hard-coded,
so the same class works for 28x28 and 32x32 inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.activations import ActivationName, build_activation, check_activation

__all__ = ["ConvNet", "FourBlockCNN", "LeNet", "conv_output_size"]


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size of a convolution or pooling layer: floor((size - k + 2p) / s) + 1.

    The result may be < 1 for impossible configurations; callers decide how to report it.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size={kernel_size} must be >= 1")
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")
    if padding < 0:
        raise ValueError(f"padding={padding} must be >= 0")
    return (size - kernel_size + 2 * padding) // stride + 1


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} must be in [0, 1)")


class FourBlockCNN(nn.Module):
    """S1.3 CNN: ``len(channels)`` blocks of Conv(k3,s1,p1) - act - MaxPool(2) - BN - Dropout.

    Then Flatten - Linear(flat, hidden) - act - Linear(hidden, num_classes). For the
    defaults the map shrinks 28 -> 14 -> 7 -> 3 -> 1, so ``flat`` = 256.
    """

    family = "cnn"  # MLflow tag `model_family`, grouping runs in the UI

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        channels: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.3,
        hidden: int = 128,
        activation: ActivationName = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        check_activation(activation)
        channels = tuple(int(c) for c in channels)
        _check_positive(
            in_channels=in_channels, num_classes=num_classes, input_size=input_size, hidden=hidden
        )
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels={channels} must be a non-empty sequence of ints >= 1")
        _check_dropout(dropout)

        blocks: list[nn.Module] = []
        size, width = input_size, in_channels
        for i, out_channels in enumerate(channels):
            # k3/s1/p1 keeps the spatial size; only the pooling halves it.
            size = conv_output_size(conv_output_size(size, 3, 1, 1), 2, 2, 0)
            if size < 1:
                raise ValueError(
                    f"input_size={input_size} is too small for {len(channels)} blocks: "
                    f"the feature map would vanish after block {i + 1} (channels={channels})"
                )
            blocks += [
                nn.Conv2d(width, out_channels, kernel_size=3, stride=1, padding=1),
                build_activation(activation, negative_slope),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(out_channels),
                nn.Dropout(dropout),
            ]
            width = out_channels

        self.flat_features = width * size * size
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, hidden),
            build_activation(activation, negative_slope),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LeNet(nn.Module):
    """S0.3 LeNet-5 style CNN: conv k5 - act - pool 2, twice, then FC 120 - 84 - classes.

    On 3x32x32 inputs: 32 -> 28 -> 14 -> 10 -> 5, so the first FC layer has 16*5*5 = 400
    inputs.
    """

    family = "cnn"  # MLflow tag `model_family`, grouping runs in the UI

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 5,
        input_size: int = 32,
        activation: ActivationName = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        check_activation(activation)
        _check_positive(in_channels=in_channels, num_classes=num_classes, input_size=input_size)

        size = input_size
        for _ in range(2):
            size = conv_output_size(conv_output_size(size, 5, 1, 0), 2, 2, 0)
        if size < 1:
            raise ValueError(f"input_size={input_size} is too small for LeNet (needs >= 16)")

        self.flat_features = 16 * size * size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            build_activation(activation, negative_slope),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            build_activation(activation, negative_slope),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, 120),
            build_activation(activation, negative_slope),
            nn.Linear(120, 84),
            build_activation(activation, negative_slope),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class ConvNet(nn.Module):
    """S2 configurable CNN: per block Conv(k, s, p) - [BatchNorm2d] - act - Dropout.

    Then Flatten - Linear(flat, hidden) - act - Dropout - Linear(hidden, num_classes).
    For S2's (2, 2, 0) on 28x28 the map shrinks 28 -> 14 -> 7 -> 3, so ``flat`` = 128*3*3.
    """

    family = "cnn"  # MLflow tag `model_family`, grouping runs in the UI

    conv_output_size = staticmethod(conv_output_size)

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        batch_norm: bool = False,
        dropout: float = 0.1,
        hidden: int = 128,
        activation: ActivationName = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        check_activation(activation)
        channels = tuple(int(c) for c in channels)
        _check_positive(
            in_channels=in_channels, num_classes=num_classes, input_size=input_size, hidden=hidden
        )
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels={channels} must be a non-empty sequence of ints >= 1")
        _check_dropout(dropout)

        blocks: list[nn.Module] = []
        size, width = input_size, in_channels
        for i, out_channels in enumerate(channels):
            new_size = conv_output_size(size, kernel_size, stride, padding)
            if new_size < 1:
                raise ValueError(
                    f"input_size={input_size} with kernel_size={kernel_size}, stride={stride}, "
                    f"padding={padding}: block {i + 1} of channels={channels} would map "
                    f"{size}x{size} to {new_size}x{new_size}; use fewer channels (blocks), "
                    "a smaller kernel_size or stride, or more padding"
                )
            size = new_size
            blocks.append(nn.Conv2d(width, out_channels, kernel_size, stride, padding))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_channels))
            blocks.append(build_activation(activation, negative_slope))
            # Elementwise dropout, as in S1.3; S2 only tunes its rate.
            blocks.append(nn.Dropout(dropout))
            width = out_channels

        self.flat_features = width * size * size
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, hidden),
            build_activation(activation, negative_slope),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
