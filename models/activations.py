"""The one activation registry of the project.

Every network (``models.components``), every config parser and every Optuna study
takes its activation names from here, so a name accepted in one place is accepted
everywhere. ``ActivationName`` is the single source of truth: parsers use it as a
type annotation, studies iterate over ``ACTIVATIONS``.

Two views of each activation are offered:

* :func:`build_activation` returns an ``nn.Module`` for the autograd networks
  (S0 MLP/CNN, S1.2/S1.3, S2 ConvNet);
* :func:`activation_functions` returns the function and its hand-written derivative
  for the from-scratch network (S1.1, S3, S4), which must not use autograd.

The set covers S4's comparison (ReLU, Leaky ReLU, SWISH, SELU) plus the activations
named by the other tasks: sigmoid (S3), tanh (S2) and ELU (S1).
"""

from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "SELU_ALPHA",
    "SELU_LAMBDA",
    "ActivationName",
    "activation_functions",
    "build_activation",
    "canonical_activation",
    "check_activation",
]

ActivationName = Literal["relu", "leaky_relu", "elu", "selu", "swish", "sigmoid", "tanh"]
ACTIVATIONS: tuple[str, ...] = typing.get_args(ActivationName)

# Standard SELU constants (Klambauer et al., 2017); the same values torch.nn.SELU uses,
# so the hand-written and the autograd networks compute the same function.
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772

# ELU's alpha is fixed at torch's default: no task asks to vary it.
_ELU_ALPHA = 1.0


#: Other names for the same activations (SiLU is PyTorch's name for SWISH).
SYNONYMS = {"silu": "swish", "lrelu": "leaky_relu"}


def canonical_activation(name: str) -> str:
    """The registry's spelling of `name`: any case, `-`, `_`, space or no separator
    (`SELU`, `Leaky ReLU`, `leaky-relu`, `LeakyReLU` -> `leaky_relu`; `silu` -> `swish`).
    A name that matches none is returned as given, for the caller to refuse."""
    squashed = re.sub(r"[-_ ]", "", str(name).lower())
    for known in ACTIVATIONS:
        if known.replace("_", "") == squashed:
            return known
    return SYNONYMS.get(squashed, name)


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, otherwise raise ``ValueError``.

    Called in network constructors so that a typo in a config fails when the model
    is built, not somewhere inside the first training step.
    """
    if name not in ACTIVATIONS:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(
            f"activation={name!r} is not a known activation; valid activations: {valid}"
        )
    return name


def build_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    """Build the ``nn.Module`` for activation ``name``.

    ``negative_slope`` is only used by ``leaky_relu`` (S4 uses 0.01); it is accepted
    for every name so callers can pass their config through unchanged.
    """
    check_activation(name)
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=negative_slope)
    if name == "elu":
        return nn.ELU(alpha=_ELU_ALPHA)
    if name == "selu":
        return nn.SELU()
    if name == "swish":
        return nn.SiLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    return nn.Tanh()


# Hand-written activations and derivatives for the from-scratch network. They are
# module-level functions (or functools.partial of them) rather than closures so a
# model holding one can still be pickled.


def _relu(z: Tensor) -> Tensor:
    return z.clamp_min(0)


def _relu_grad(z: Tensor) -> Tensor:
    # relu'(0) = 0 by convention (strict inequality).
    return (z > 0).to(z.dtype)


def _leaky_relu(z: Tensor, negative_slope: float) -> Tensor:
    return torch.where(z > 0, z, negative_slope * z)


def _leaky_relu_grad(z: Tensor, negative_slope: float) -> Tensor:
    # leaky'(0) = negative_slope by convention, matching relu'(0) = 0.
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))


def _elu(z: Tensor) -> Tensor:
    # Clamping keeps expm1 from overflowing in the branch torch.where discards.
    return torch.where(z > 0, z, _ELU_ALPHA * torch.expm1(z.clamp_max(0)))


def _elu_grad(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), _ELU_ALPHA * torch.exp(z.clamp_max(0)))


def _selu(z: Tensor) -> Tensor:
    return SELU_LAMBDA * torch.where(z > 0, z, SELU_ALPHA * torch.expm1(z.clamp_max(0)))


def _selu_grad(z: Tensor) -> Tensor:
    return SELU_LAMBDA * torch.where(
        z > 0, torch.ones_like(z), SELU_ALPHA * torch.exp(z.clamp_max(0))
    )


def _swish(z: Tensor) -> Tensor:
    return z * torch.sigmoid(z)


def _swish_grad(z: Tensor) -> Tensor:
    # d/dz z*s(z) = s + z*s*(1-s), written so sigmoid is evaluated once.
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _sigmoid(z: Tensor) -> Tensor:
    return torch.sigmoid(z)


def _sigmoid_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _tanh(z: Tensor) -> Tensor:
    return torch.tanh(z)


def _tanh_grad(z: Tensor) -> Tensor:
    t = torch.tanh(z)
    return 1 - t * t


_ActFn = Callable[[Tensor], Tensor]

_FUNCTIONS: dict[str, tuple[_ActFn, _ActFn]] = {
    "relu": (_relu, _relu_grad),
    "elu": (_elu, _elu_grad),
    "selu": (_selu, _selu_grad),
    "swish": (_swish, _swish_grad),
    "sigmoid": (_sigmoid, _sigmoid_grad),
    "tanh": (_tanh, _tanh_grad),
}


def activation_functions(name: str, negative_slope: float = 0.01) -> tuple[_ActFn, _ActFn]:
    """Return ``(f, df)``: activation ``name`` and its derivative with respect to its input.

    Both are plain elementwise tensor ops with no autograd, for the from-scratch
    network's hand-written backward pass. Conventions at 0: ``relu'(0) = 0`` and
    ``leaky_relu'(0) = negative_slope``; ELU/SELU use the left-hand derivative at 0.
    """
    check_activation(name)
    if name == "leaky_relu":
        if not math.isfinite(negative_slope):
            raise ValueError(f"negative_slope={negative_slope!r} must be a finite number")
        return (
            functools.partial(_leaky_relu, negative_slope=negative_slope),
            functools.partial(_leaky_relu_grad, negative_slope=negative_slope),
        )
    return _FUNCTIONS[name]
