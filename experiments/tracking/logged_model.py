"""A run's trained network as an MLflow model: a LoggedModel, loadable without pickle, registrable.

Written by the `model` output callback of a plain run, and for a study's best trial once
the study ends. What is logged (the `ClassProbabilities` wrapper, `pt2` serialization read
back without pickle, signature, metadata, the test metrics attached): docs/tracking.md.
The input example is two test images: a batch of one would be exported as a fixed batch of one.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

import torch
from torch import nn

#: the LoggedModel's name, so a run's model is also `runs:/RUN_ID/model`
MODEL_NAME = "model"


class ClassProbabilities(nn.Module):
    """The network's logits turned into class probabilities: (batch, classes), rows sum to 1."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


def model_metadata(data: Any, task: str) -> dict[str, Any]:
    """What a user of the model needs besides the weights: class names, input, normalization."""
    return {
        "task": task,
        "dataset": data.dataset_name,
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        # pixels in [0, 1], then (x - mean) / std per channel when normalize is on
        "normalize": bool(data.normalize),
        "mean": list(data.mean),
        "std": list(data.std),
    }


def _signature(input_shape: tuple[int, ...], num_classes: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # Unnamed specs: a named input would reach the model as a dict {name: array}, which
    # the PyTorch flavor's predict refuses (serving sends {"inputs": [...]}).
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def pip_requirements() -> list[str]:
    """What loading the model needs, given rather than inferred: MLflow infers them in a
    subprocess that imports the model (about 7 s a model on a 2-core machine)."""
    # the public version: 2.14.1+cu130 -> 2.14.1
    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in ("torch", "mlflow", "numpy")]


def log_trained_model(
    uri: str,
    run_id: str,
    network: nn.Module,
    data: Any,
    *,
    task: str,
    test_step: int,
    tags: dict[str, str] | None = None,
):
    """Log `network` (as tested) as the run's LoggedModel; the ModelInfo. MLflow attaches the
    run's metrics logged at `test_step` (its test metrics) to the model.

    `data` is the set-up datamodule the network was tested on: its first two test images
    are the input example, its class names and normalization the metadata.
    """
    import mlflow

    wrapper = ClassProbabilities(copy.deepcopy(network)).cpu().eval()
    example = data.test_x[:2].cpu().numpy()  # two: torch.export fixes a batch of one
    # MLflow's Model.log takes the store from the global tracking URI and the experiment
    # from the active run (given only `run_id`, it files the model under the Default
    # experiment), so the run is made the active one: the documented way to log to a run.
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        return mlflow.pytorch.log_model(
            wrapper,
            name=MODEL_NAME,
            serialization_format="pt2",
            input_example=example,
            signature=_signature(tuple(data.input_shape), data.num_classes),
            pip_requirements=pip_requirements(),
            metadata=model_metadata(data, task),
            tags=tags,
            step=test_step,
        )


def register(uri: str, name: str, model_id: str, tags: dict[str, str]):
    """Register LoggedModel `model_id` as a new version of `name` (created when new); the
    version. `mlflow.register_model` also records the version on the LoggedModel (its
    `mlflow.modelVersions` tag), which is how the UI's Models tab links the two."""
    import mlflow

    mlflow.set_tracking_uri(uri)  # register_model has no tracking_uri argument
    return mlflow.register_model(f"models:/{model_id}", name, tags=tags)
