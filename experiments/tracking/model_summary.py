"""Per-layer output shapes and parameter counts (with and without bias) of a network.

Answers the S1/S2 theory items from the real network (the table, its columns and the
`model-summary` command: docs/tracking.md).

Output shapes come from forward hooks on the leaf modules during one forward pass of a
dummy batch of 1 (in eval mode, so batch norm statistics are not touched). The
from-scratch ``ScratchTwoLayerNet`` has no submodules: it is reported as its two linear
layers (W1, b1 and W2, b2) and its activation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import torch
from torch import nn

__all__ = ["LayerRow", "format_shape", "format_summary", "summarize", "totals", "write_csv"]


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    #: output shape without the batch dimension, e.g. (32, 14, 14); () if never called
    output_shape: tuple[int, ...]
    #: parameters including biases
    params: int
    #: parameters without biases (weights only)
    weights: int

    @property
    def biases(self) -> int:
        return self.params - self.weights


def _is_bias(name: str) -> bool:
    last = name.split(".")[-1]
    # "bias" for torch layers (batch norm's shift beta included), "b1"/"b2" for the
    # from-scratch network.
    return last == "bias" or (len(last) >= 2 and last[0] == "b" and last[1:].isdigit())


def _param_counts(module: nn.Module, recurse: bool = False) -> tuple[int, int]:
    named = list(module.named_parameters(recurse=recurse))
    total = sum(p.numel() for _, p in named)
    return total, total - sum(p.numel() for n, p in named if _is_bias(n))


def _dummy(network: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    return torch.zeros(1, *(int(v) for v in input_shape), device=device, dtype=dtype)


def _scratch_rows(network: nn.Module, input_shape: Sequence[int]) -> list[LayerRow]:
    # ScratchTwoLayerNet: X W1 + b1 -> act -> W2 + b2; shapes follow from W1 (in, hidden).
    with torch.no_grad():
        out = network(_dummy(network, input_shape))
    hidden = int(network.W1.shape[1])
    w1, b1, w2, b2 = (getattr(network, n).numel() for n in ("W1", "b1", "W2", "b2"))
    act = str(getattr(network, "activation", "activation"))
    return [
        LayerRow("W1,b1", "Linear (scratch)", (hidden,), w1 + b1, w1),
        LayerRow("activation", act, (hidden,), 0, 0),
        LayerRow("W2,b2", "Linear (scratch)", tuple(out.shape[1:]), w2 + b2, w2),
    ]


def summarize(network: nn.Module, input_shape: Sequence[int]) -> list[LayerRow]:
    """One row per leaf module in execution order (uncalled leaves last), for input (C, H, W)."""
    if all(hasattr(network, n) for n in ("W1", "b1", "W2", "b2")) and not list(network.children()):
        return _scratch_rows(network, input_shape)

    leaves = [(name, m) for name, m in network.named_modules() if not list(m.children())]
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape[1:])
            if name not in order:
                order.append(name)

        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in leaves]
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(_dummy(network, input_shape))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()

    by_name = dict(leaves)
    ranked = order + [name for name, _ in leaves if name not in order]
    rows = []
    for name in ranked:
        module = by_name[name]
        total, weights = _param_counts(module)
        rows.append(LayerRow(name, type(module).__name__, shapes.get(name, ()), total, weights))
    # Parameters registered directly on a container (none of ours do) would be missed by
    # the leaves; list them so the rows always add up to the network's total.
    for name, module in network.named_modules():
        if list(module.children()):
            total, weights = _param_counts(module)
            if total:
                rows.append(
                    LayerRow(name or "(network)", type(module).__name__, (), total, weights)
                )
    return rows


def totals(rows: Sequence[LayerRow]) -> tuple[int, int]:
    """(parameters with bias, parameters without bias) over all rows."""
    return sum(r.params for r in rows), sum(r.weights for r in rows)


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def format_summary(rows: Sequence[LayerRow]) -> str:
    """A fixed-width table with a totals line."""
    header = ("layer", "type", "output shape", "params", "params w/o bias")
    body = [
        (r.name, r.type, format_shape(r.output_shape), f"{r.params:,}", f"{r.weights:,}")
        for r in rows
    ]
    total, weights = totals(rows)
    footer = ("total", "", "", f"{total:,}", f"{weights:,}")
    widths = [max(len(line[i]) for line in (header, *body, footer)) for i in range(5)]

    def line(cells: Sequence[str]) -> str:
        left = [cells[i].ljust(widths[i]) for i in range(3)]
        right = [cells[i].rjust(widths[i]) for i in range(3, 5)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, body), rule, line(footer)]) + "\n"


def write_csv(rows: Sequence[LayerRow], path: str | Path) -> Path:
    """The rows as CSV (output_shape as e.g. 32x14x14) with a final totals row."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(LayerRow)])
        for row in rows:
            name, kind, shape, params, weights = astuple(row)
            writer.writerow([name, kind, format_shape(shape), params, weights])
        writer.writerow(["total", "", "", *totals(rows)])
    return path
