"""The seed tasks' own facts, written down once: ids, titles, bars and reported numbers.

Source: the specification of the seed tasks (for users: `experiments/SEED_TASKS.md`). The report (`experiments.reports.report`), the accuracy
benchmark (`experiments.bench.accuracy`) and the S4 activation comparison
(`experiments.reports.compare_activations`) read them from here; tests compare against
them. Accuracies are fractions (0.90, not 90 %).

A plain-data module of the lowest layer: it imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedTask:
    id: str
    title: str
    #: test accuracy the seed task asks for (None: the task sets no bar)
    acc_bar: float | None = None
    #: overall test accuracy the seed text reported for its own solution (S2)
    reported_acc: float | None = None
    #: what the seed task asks for, in words, when it sets no accuracy bar
    bar_text: str = "no bar: the seed task asks to report the numbers"

    @property
    def pass_mark(self) -> float | None:
        """The bar, else the reported accuracy: the number a run of this task is held to."""
        return self.acc_bar if self.acc_bar is not None else self.reported_acc


@dataclass(frozen=True)
class ActivationResult:
    """One row of S4's comparison table."""

    train_loss: float
    val_acc: float


#: S2's reported overall test accuracy (the assignment's chosen CNN: "90%").
S2_REPORTED_ACC = 0.90
#: S2's reported per-class test accuracy, in the seed text's class order.
S2_REPORTED_CLASS_ACC: dict[str, float] = {
    "T-shirt/top": 0.82,
    "Trouser": 0.98,
    "Pullover": 0.90,
    "Dress": 0.93,
    "Coat": 0.78,
    "Sandal": 0.96,
    "Shirt": 0.73,
    "Sneaker": 0.99,
    "Bag": 1.00,
    "Ankle boot": 0.93,
}
#: S3's worked forward pass: the network's output, as the seed text rounds it.
S3_REPORTED_OUTPUT = 0.82
#: S4's own comparison table (10-class colour images, likely CIFAR-10): final training
#: loss and validation accuracy per activation. Not comparable with ours number for number.
S4_REPORTED_ACTIVATIONS: dict[str, ActivationResult] = {
    "relu": ActivationResult(1.49, 0.470),
    "leaky_relu": ActivationResult(1.50, 0.469),
    "swish": ActivationResult(1.51, 0.472),
    "selu": ActivationResult(1.54, 0.462),
}
#: `kind` tag of the run that holds S4's activation table (written by compare-activations,
#: read by the report).
S4_SUMMARY_KIND = "activation-summary"

_TRAINING_NO_BAR = "no bar: report test precision and accuracy, plot loss per epoch"

#: Every seed task by id, in the specification's order.
SEED_TASKS: dict[str, SeedTask] = {
    t.id: t
    for t in (
        SeedTask(
            "S0.1",
            "Worked example: 5-parameter ReLU network, chain rule and one SGD epoch",
            bar_text="no bar: a hand calculation (autograd and chain rule must agree)",
        ),
        SeedTask(
            "S0.2",
            "MLP 3072-512-256-5 on the CIFAR-100 superclass (large man-made outdoor things)",
            bar_text=_TRAINING_NO_BAR,
        ),
        SeedTask(
            "S0.3",
            "Small LeNet-5 style CNN on the CIFAR-100 superclass",
            bar_text=_TRAINING_NO_BAR,
        ),
        SeedTask(
            "S1.1",
            "From-scratch ANN (hand-written backward pass) on Fashion-MNIST",
            acc_bar=0.77,
        ),
        SeedTask(
            "S1.2",
            "PyTorch ANN 784-512-10 (SGD with momentum) on Fashion-MNIST",
            acc_bar=0.80,
        ),
        SeedTask("S1.3", "Four-block CNN on Fashion-MNIST", acc_bar=0.85),
        SeedTask(
            "S2",
            "CNN (k2 s2 p0, no BN, dropout 0.1) on Fashion-MNIST, per-class analysis",
            reported_acc=S2_REPORTED_ACC,
            bar_text=f"reported: {S2_REPORTED_ACC:.2f} overall, per class below",
        ),
        SeedTask(
            "S3",
            "Worked example: sigmoid network forward pass and gradients",
            bar_text=f"reported output {S3_REPORTED_OUTPUT} (rounded)",
        ),
        SeedTask(
            "S4",
            "Two-layer MLP with activation variants (hand backprop, SGD + L2)",
            bar_text="reported per activation (loss / val acc), see the activation table",
        ),
    )
}


def meets_bar(task_id: str, test_acc: float | None) -> bool | None:
    """Whether a test accuracy meets the task's bar; None when the task sets no bar."""
    bar = SEED_TASKS[task_id].acc_bar
    if bar is None:
        return None
    return test_acc is not None and test_acc >= bar
