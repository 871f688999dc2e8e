"""Fully connected classifier (multi-layer perceptron).

Used by S0.2 (CIFAR-100 superclass MLP, default widths 3072-512-256-5) and S1.2
(Fashion-MNIST ANN, Linear - ReLU - Linear), and as the autograd counterpart of the
from-scratch network in S4. Widths are constructor arguments so configs choose them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.activations import ActivationName, build_activation, check_activation

__all__ = ["MLP"]


class MLP(nn.Module):
    """``Linear - act - Dropout`` per hidden layer, then a final ``Linear`` to the logits.

    Inputs of any shape ``(batch, ...)`` are flattened, so images can be fed directly.
    With ``hidden_sizes=()`` the network is a plain linear (softmax-regression) classifier.
    """

    family = "mlp"  # MLflow tag `model_family`, grouping runs in the UI

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (128,),
        activation: ActivationName = "relu",
        negative_slope: float = 0.01,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_activation(activation)
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        for name, value in (("in_features", in_features), ("num_classes", num_classes)):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes={hidden_sizes} must all be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")

        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden_sizes = hidden_sizes
        self.activation = activation

        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden))
            layers.append(build_activation(activation, negative_slope))
            # Always present (identity at p=0) so state_dict keys do not depend on the
            # dropout rate and a checkpoint loads into a model built with another rate.
            layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    @property
    def first_layer(self) -> nn.Linear:
        """The first ``nn.Linear``; its weight rows are drawn as image tiles (S4)."""
        return self.net[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))
