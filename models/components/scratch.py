"""Two-layer network with a hand-written forward and backward pass (no autograd).

Used by S1.1 (NumPy-style ANN: ReLU hidden layer, softmax output, cross-entropy divided
by the number of classes), S3 (network from scratch, learning-rate / epoch /
regularization experiments) and S4 (activation variants, SGD with L2 regularization).

The parameters are ``nn.Parameter`` with ``requires_grad=False``: they travel with
``state_dict``, ``.to(device)`` and Lightning checkpoints like any other weights, while
autograd never sees them. Gradients come from :meth:`ScratchTwoLayerNet.loss_and_grads`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from models.activations import activation_functions, check_activation

__all__ = ["ScratchTwoLayerNet"]

PARAM_NAMES = ("W1", "b1", "W2", "b2")


def _log_softmax(z: Tensor) -> Tensor:
    # Subtracting the row max before exp keeps exp() from overflowing on large logits.
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


class ScratchTwoLayerNet(nn.Module):
    """``X W1 + b1 -> act -> W2 + b2 -> softmax``, trained by explicit gradients.

    Shapes follow the assignments (row-major batch): ``W1 (in, hidden)``, ``b1 (1, hidden)``,
    ``W2 (hidden, out)``, ``b2 (1, out)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_classes: int,
        activation: str = "relu",
        negative_slope: float = 0.01,
        init: Literal["normal", "he"] = "normal",
        init_std: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_activation(activation)
        for name, value in (
            ("in_features", in_features),
            ("hidden_size", hidden_size),
            ("num_classes", num_classes),
        ):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if init not in ("normal", "he"):
            raise ValueError(f"init={init!r} must be 'normal' or 'he'")
        if init == "normal" and not init_std > 0:
            raise ValueError(f"init_std={init_std} must be > 0")

        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.activation = activation
        self.negative_slope = negative_slope

        # A private generator makes the initial weights depend on `seed` alone, not on
        # whatever else consumed the global RNG before the model was built (S1.1: fixed seed).
        gen = torch.Generator().manual_seed(seed)
        std1 = init_std if init == "normal" else math.sqrt(2.0 / in_features)
        std2 = init_std if init == "normal" else math.sqrt(2.0 / hidden_size)
        w1 = torch.randn(in_features, hidden_size, generator=gen) * std1
        w2 = torch.randn(hidden_size, num_classes, generator=gen) * std2
        self.W1 = nn.Parameter(w1, requires_grad=False)
        self.b1 = nn.Parameter(torch.zeros(1, hidden_size), requires_grad=False)
        self.W2 = nn.Parameter(w2, requires_grad=False)
        self.b2 = nn.Parameter(torch.zeros(1, num_classes), requires_grad=False)

    def _acts(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        # Looked up per call rather than stored, so the module stays picklable/deep-copyable.
        return activation_functions(self.activation, self.negative_slope)

    def _forward_cache(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        act, _ = self._acts()
        x = x.flatten(1).to(self.W1.dtype)
        z1 = x @ self.W1 + self.b1
        a1 = act(z1)
        z2 = a1 @ self.W2 + self.b2
        return x, z1, a1, z2

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, num_classes)``; ``x`` of shape ``(batch, ...)`` is flattened."""
        return self._forward_cache(x)[3]

    def predict_proba(self, x: Tensor) -> Tensor:
        """Softmax class probabilities ``(batch, num_classes)``."""
        return _log_softmax(self.forward(x)).exp()

    def predict(self, x: Tensor) -> Tensor:
        """Predicted class indices (argmax of the probabilities)."""
        return self.forward(x).argmax(dim=1)

    def loss_and_grads(
        self, x: Tensor, y: Tensor, l2_lambda: float = 0.0, loss_scale: float = 1.0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and its exact gradients for ``W1, b1, W2, b2`` (see :meth:`training_terms`)."""
        loss, grads, _ = self.training_terms(x, y, l2_lambda, loss_scale)
        return loss, grads

    @torch.no_grad()
    def training_terms(
        self, x: Tensor, y: Tensor, l2_lambda: float = 0.0, loss_scale: float = 1.0
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """Loss and its exact gradients for ``W1, b1, W2, b2``, by the hand-derived chain rule.

        ``loss = loss_scale * mean_i CE_i + l2_lambda / (2 n) * (||W1||^2 + ||W2||^2)``
        with ``n`` the batch size. ``loss_scale = 1 / num_classes`` gives S1.1's
        "cross-entropy divided by the number of classes"; the L2 term is S4's.
        """
        if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(
                f"y must be a 1-D integer tensor of class indices, got shape {tuple(y.shape)} "
                f"and dtype {y.dtype}"
            )
        _, act_grad = self._acts()
        x, z1, a1, z2 = self._forward_cache(x)
        n = x.shape[0]
        if y.shape[0] != n:
            raise ValueError(f"x has {n} rows but y has {y.shape[0]} labels")
        y = y.long().to(z2.device)

        log_probs = _log_softmax(z2)
        probs = log_probs.exp()
        rows = torch.arange(n, device=z2.device)
        ce = -log_probs[rows, y].mean()
        l2 = (self.W1 * self.W1).sum() + (self.W2 * self.W2).sum()
        loss = loss_scale * ce + l2_lambda / (2 * n) * l2

        one_hot = torch.zeros_like(probs)
        one_hot[rows, y] = 1.0
        # d(mean CE)/dZ2 = (softmax - onehot) / n; scaling the loss scales the gradient.
        dz2 = (probs - one_hot) * (loss_scale / n)
        dw2 = a1.T @ dz2 + (l2_lambda / n) * self.W2
        db2 = dz2.sum(dim=0, keepdim=True)
        dz1 = (dz2 @ self.W2.T) * act_grad(z1)
        dw1 = x.T @ dz1 + (l2_lambda / n) * self.W1
        db1 = dz1.sum(dim=0, keepdim=True)
        # The logits come back too, so a training step needs one forward pass, not two.
        return loss, {"W1": dw1, "b1": db1, "W2": dw2, "b2": db2}, z2

    @torch.no_grad()
    def sgd_step(self, grads: dict[str, Tensor], lr: float) -> None:
        """Plain gradient-descent update, in place: ``p -= lr * grads[name]``."""
        missing = [name for name in PARAM_NAMES if name not in grads]
        if missing:
            raise KeyError(f"grads is missing {missing}; expected keys {list(PARAM_NAMES)}")
        for name in PARAM_NAMES:
            getattr(self, name).sub_(grads[name], alpha=lr)

    @property
    def first_layer_weight(self) -> Tensor:
        """``W1.T`` of shape ``(hidden, in)``: one row per hidden unit, drawn as an image tile (S4)."""
        return self.W1.detach().T
