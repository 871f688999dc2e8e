"""S2's problem classes, named from a run's test confusion counts (`confusion_matrix.csv`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemClass:
    name: str
    accuracy: float
    #: its two largest confusions: (predicted class, test images), largest first
    confusions: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        to = ", ".join(f"{count} to {other}" for other, count in self.confusions)
        return f"{self.name} {100 * self.accuracy:.1f}%: {to or 'no confusions'}"


def class_accuracies(counts: list[list[int]]) -> list[float | None]:
    """Per true class: correct / its test images (None for a class without test images)."""
    return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(counts)]


def overall_accuracy(counts: list[list[int]]) -> float | None:
    total = sum(map(sum, counts))
    return sum(counts[i][i] for i in range(len(counts))) / total if total else None


def problem_classes(names: list[str], counts: list[list[int]], top: int = 2) -> list[ProblemClass]:
    """The classes below the overall accuracy, worst first, each with its `top` largest
    confusions (counts of its test images predicted as another class; zeros left out)."""
    overall = overall_accuracy(counts)
    if overall is None:
        return []
    out = []
    for i, (name, acc) in enumerate(zip(names, class_accuracies(counts), strict=True)):
        if acc is None or acc >= overall:
            continue
        others = sorted(
            ((names[j], c) for j, c in enumerate(counts[i]) if j != i and c > 0),
            key=lambda item: -item[1],
        )
        out.append(ProblemClass(name, acc, tuple(others[:top])))
    return sorted(out, key=lambda p: p.accuracy)
