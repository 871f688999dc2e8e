"""LightningModules that train the plain networks of `models.components` on image classification.

One base, `ClassificationModule`, owns what every seed task shares: one step for
train/val/test, torchmetrics per stage (accuracy, macro precision/recall/F1), and on the
test set per-class accuracy and the confusion matrix. Two modules train on it:
`ImageClassifier` takes any network as `net` (autograd, Adam/SGD), `ScratchClassifier`
builds the from-scratch network and updates it from its hand-written gradients. A YAML
file under experiments/configs/ (parsed by jsonargparse from these typed signatures) is
the whole configuration:

    python -m experiments run s1-mlp --model.lr 0.05 --model.net.hidden_sizes '[256]'
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from models.activations import ActivationName
from models.components import ScratchTwoLayerNet

Stage = Literal["train", "val", "test"]


def _stage_metrics(num_classes: int, stage: str) -> MetricCollection:
    # Macro averages: the seed tasks ask for precision over classes, and the per-class
    # analysis (S2) is about classes being unequal, which micro averaging would hide.
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=f"{stage}/",
    )


class ClassificationModule(L.LightningModule):
    """Shared train/val/test logic; subclasses set `self.network` in their constructor."""

    #: model family, logged as an MLflow tag so runs can be grouped in the UI.
    family: ClassVar[str] = "classifier"

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: PositiveInt = 10,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        # Training accuracy only: it is what the learning curves need, and precision/F1 on
        # every training batch would cost time on the hot path for numbers nobody reads.
        # validate_args=False: the per-step input checks (a torch.unique over the targets)
        # cost more than the update itself for small models. (MeanMetric keeps its default
        # nan_strategy: "disable" ignores `weight` in torchmetrics 1.9.)
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)
        self.train_loss = MeanMetric()
        # Training batches are held as detached tensors and handed to the two metrics above
        # in one update per summary (or progress-bar refresh): a torchmetrics update costs
        # ~0.15 ms of Python per call, a quarter of a whole S1.2 step on a CPU. The logits are
        # held, not their argmax: one argmax over the concatenated logits at the summary
        # instead of one per step (3 us per S1.2 step).
        self._train_batches: list[tuple[Tensor, int, Tensor, Tensor]] = []
        self._running_loss = self._running_weight = 0.0  # sum of loss x samples, samples
        self.val_metrics = _stage_metrics(self.num_classes, "val")
        self.test_metrics = _stage_metrics(self.num_classes, "test")
        self.test_class_acc = MulticlassAccuracy(self.num_classes, average=None)
        self.test_confusion = MulticlassConfusionMatrix(self.num_classes)
        #: filled at the end of `test`: (num_classes, num_classes) counts, rows = true class.
        self.confusion_matrix: Tensor | None = None
        self.network: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def shared_step(self, batch: tuple[Tensor, Tensor], stage: Stage) -> tuple[Tensor, Tensor]:
        """Forward, loss and metric updates for one batch of any stage."""
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.observe(stage, loss, logits, y)
        return loss, logits

    def observe(self, stage: Stage, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        n = y.shape[0]
        if stage == "train":
            # Accumulated here and logged once per validation (or epoch): per-step MLflow
            # calls are the main tracking cost, and the curves only need epoch points.
            self._train_batches.append((loss.detach(), n, logits.detach(), y))
            # Nothing is logged per step: the progress bar reads `running_train_loss`.
            return
        # sync_dist: under DDP the epoch loss is the sample-weighted mean over all ranks (the
        # torchmetrics below sync themselves on compute); a no-op in one process.
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, y)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        if stage == "test":
            self.test_class_acc.update(logits, y)
            self.test_confusion.update(logits, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def _update_train_metrics(self) -> None:
        """Feed the held training batches to the training metrics in one update each."""
        if not self._train_batches:
            return
        losses, sizes, logits, targets = zip(*self._train_batches, strict=True)
        self._train_batches.clear()
        losses = torch.stack(losses)
        weights = torch.tensor(sizes, dtype=losses.dtype, device=losses.device)
        self.train_loss.update(losses, weight=weights)
        self.train_acc.update(torch.cat(logits).argmax(1), torch.cat(targets))
        # The progress bar's running mean, kept here: MeanMetric's public `compute()` would
        # sync across DDP ranks on every redraw (the running sums it keeps are not public).
        self._running_loss += float((losses * weights).sum())
        self._running_weight += float(weights.sum())

    def running_train_loss(self) -> float | None:
        """Mean training loss since the last summary, on this process (for the progress bar)."""
        self._update_train_metrics()
        return self._running_loss / self._running_weight if self._running_weight else None

    def _log_train_summary(self) -> None:
        # Mean training loss/accuracy since the last point: per epoch normally, per
        # validation interval when validation runs every N steps (S4's 100 iterations).
        self._update_train_metrics()
        if self.train_loss.update_count == 0:
            return
        # compute() already syncs across DDP ranks; sync_dist then averages equal values
        # (a no-op) and keeps Lightning from warning that the epoch value is per-rank.
        self.log("train/loss", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc", self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()
        self._running_loss = self._running_weight = 0.0

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_train_summary()

    def on_train_epoch_end(self) -> None:
        self._log_train_summary()

    def on_test_epoch_end(self) -> None:
        per_class = self.test_class_acc.compute()
        self.confusion_matrix = self.test_confusion.compute().cpu()
        self.per_class_accuracy = per_class.cpu()
        names = getattr(self.trainer.datamodule, "class_names", None) or [
            str(i) for i in range(self.num_classes)
        ]
        for name, value in zip(names, per_class, strict=True):
            # MLflow metric names allow letters, digits and _-./ space: "T-shirt/top" is fine.
            key = f"test/class_acc/{re.sub(r'[^A-Za-z0-9_./ -]', '_', name)}"
            self.log(key, value, sync_dist=True)  # synced by compute(): see _log_train_summary
        self.test_class_acc.reset()
        self.test_confusion.reset()


class ImageClassifier(ClassificationModule):
    """Any network `net` trained by autograd with Adam or SGD (momentum), optional cosine schedule.

    The network is a plain `nn.Module` (`models.components`), given in the YAML by its own
    `class_path`/`init_args`; its size arguments (`num_classes`, `in_features`, ...) are
    linked from the datamodule by the config parser, so a new network needs no new module:

        model:
          class_path: models.ImageClassifier
          init_args:
            net: {class_path: models.components.MLP, init_args: {hidden_sizes: [512]}}
            lr: 0.05
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: PositiveFloat = 1e-3,
        momentum: NonNegativeFloat = 0.0,
        weight_decay: NonNegativeFloat = 0.0,
        scheduler: Literal["none", "cosine"] = "none",
        label_smoothing: NonNegativeFloat = 0.0,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: PositiveInt = 10,
    ) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes)
        # The network is saved with the weights; its arguments are in the logged config.
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.network = net
        #: "mlp" or "cnn", from the network (MLflow tag `model_family`)
        self.family = getattr(net, "family", ClassificationModule.family)
        self.optimizer_name = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.scheduler_name = scheduler
        self.label_smoothing = float(label_smoothing)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """This model's optimizer over `params`: its network's, or a copy's (the thread probe
        of experiments/training/threads.py times real steps on a copy)."""
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def configure_optimizers(self) -> Any:
        opt = self.make_optimizer(self.network.parameters())
        if self.scheduler_name == "none":
            return opt
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class ScratchClassifier(ClassificationModule):
    """The from-scratch two-layer network (S1.1, S3, S4): hand-written backward pass, plain SGD.

    Lightning runs the loop; the update is manual (`automatic_optimization = False`) because
    the gradients come from `ScratchTwoLayerNet.loss_and_grads`, not from autograd.
    """

    family = "scratch"

    def __init__(
        self,
        hidden_size: PositiveInt = 128,
        activation: ActivationName = "relu",
        negative_slope: float = 0.01,
        init: Literal["normal", "he"] = "normal",
        init_std: PositiveFloat = 0.01,
        init_seed: int = 0,
        lr: PositiveFloat = 0.1,
        l2_lambda: NonNegativeFloat = 0.0,
        loss_scale: Literal["mean", "per_class"] = "mean",
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: PositiveInt = 10,
    ) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes)
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False
        c, h, w = self.input_shape
        self.network = ScratchTwoLayerNet(
            c * h * w,
            hidden_size,
            self.num_classes,
            activation=activation,
            negative_slope=negative_slope,
            init=init,
            init_std=init_std,
            seed=init_seed,
        )
        self.lr = float(lr)
        self.l2_lambda = float(l2_lambda)
        # S1.1 divides the cross-entropy by the number of classes; the gradients follow it.
        self.loss_scale = 1.0 / self.num_classes if loss_scale == "per_class" else 1.0

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.loss_scale * F.cross_entropy(logits, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, grads, logits = self.network.training_terms(x, y, self.l2_lambda, self.loss_scale)
        # The hand-derived gradients are handed to a plain SGD step (p -= lr * g, no momentum,
        # no weight decay: the L2 term is already in the gradients). Going through a Lightning
        # optimizer keeps global_step, max_steps and checkpoint timing working as usual.
        for name, param in self.network.named_parameters():
            param.grad = grads[name]
        optimizer = self.optimizers()
        optimizer.step()
        optimizer.zero_grad()
        self.observe("train", loss, logits, y)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.network.parameters(), lr=self.lr)
