"""`python -m experiments predict MODEL INPUT...`: the top classes of images, by name.

    python -m experiments predict models:/fashion-mlp/1 --from-test 3
    python -m experiments predict models:/fashion-mlp/1 shirt.png boot.jpg --top-k 5
    python -m experiments predict RUN_ID batch.npy --json
    python -m experiments predict models:/fashion-mlp/1 photo.png --invert yes

INPUT is a PNG or JPEG file, or a .npy array of one image or many (read without pickle);
`--from-test N` takes the first N images of the model's test set and shows their true
labels. How files become the model's input (size, channels, normalization, inversion of
dark-on-light images) is in experiments/inference/images.py. A model from a store is the
run's logged MLflow model (`mlflow.pytorch.load_model`, the pt2 file); a local checkpoint
is its network with a softmax. `--json` prints one list: per input
{"input": ..., "top": [{"class": NAME, "index": I, "probability": P}, ...]}, plus "label"
for test images.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from experiments import errors
from experiments.errors import ConfigError
from experiments.inference.images import INVERT_CHOICES, load_inputs
from experiments.inference.reference import TrainedModel, model_parser, resolve
from experiments.tracking import store


def build_parser() -> argparse.ArgumentParser:
    parser = model_parser("predict", __doc__)
    parser.add_argument("inputs", metavar="INPUT", nargs="*", help="PNG/JPEG files or .npy arrays")
    parser.add_argument("--from-test", type=int, metavar="N", help="the first N test images")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per input (default 3)")
    parser.add_argument(
        "--invert",
        choices=INVERT_CHOICES,
        default="auto",
        help="invert greyscale images: auto = when the border is light (default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.add_argument(
        "--check", action="store_true", help="check the model and the inputs; predict nothing"
    )
    return parser


def probabilities_of(trained: TrainedModel):
    """x (N, C, H, W) normalized -> (N, classes) probabilities: the logged MLflow model when
    there is one, else the checkpoint's network with a softmax."""
    if trained.model_uri:
        import mlflow

        mlflow.set_tracking_uri(trained.uri)  # where models:/ is looked up
        return mlflow.pytorch.load_model(trained.model_uri)
    from experiments.tracking.logged_model import ClassProbabilities

    return ClassProbabilities(trained.model.network).eval()


def top_classes(probabilities: torch.Tensor, class_names: list[str], k: int) -> list[list[dict]]:
    """Per row: the k most probable classes as {"class", "index", "probability"}."""
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [
        [
            {"class": class_names[i], "index": int(i), "probability": round(float(p), 6)}
            for p, i in zip(row_p, row_i, strict=True)
        ]
        for row_p, row_i in zip(values, indices, strict=True)
    ]


def predictions(trained: TrainedModel, args: argparse.Namespace) -> list[dict]:
    """One {"input", "top"[, "label"]} per input image."""
    data = trained.data
    labels, x = [], None
    if args.inputs:
        labels, pixels = load_inputs(args.inputs, tuple(data.input_shape), args.invert)
        x = data.normalize_pixels(pixels)
    rows = [{"input": label} for label in labels]
    if args.from_test:
        n = min(args.from_test, len(data.test_x))
        test_x = data.test_x[:n]
        x = test_x if x is None else torch.cat([x, test_x])
        rows += [
            {"input": f"test[{i}]", "label": data.class_names[int(data.test_y[i])]}
            for i in range(n)
        ]
    with torch.no_grad():
        probabilities = probabilities_of(trained)(x)
    tops = top_classes(probabilities, data.class_names, args.top_k)
    return [{**row, "top": top} for row, top in zip(rows, tops, strict=True)]


def print_table(rows: list[dict]) -> None:
    for row in rows:
        label = f"  (true class: {row['label']})" if "label" in row else ""
        print(f"{row['input']}{label}")
        width = max(len(t["class"]) for t in row["top"])
        for rank, t in enumerate(row["top"], 1):
            print(f"  {rank}. {t['class']:<{width}}  {t['probability']:.4f}")


def main(argv: Sequence[str]) -> int:
    from experiments.training import console

    args = build_parser().parse_args(argv)
    console.quiet_libraries(console.echo_warnings)
    try:
        if not args.inputs and not args.from_test:
            raise ConfigError("nothing to predict: give image files, .npy arrays or --from-test N")
        for flag, value in (("--from-test", args.from_test), ("--top-k", args.top_k)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} {value}: must be at least 1")
        uri = store.resolve_tracking_uri(args.tracking_uri)
        trained = resolve(args.model, uri, config=args.config)
        if args.check:  # the model and every input read, nothing predicted or written
            if args.inputs:
                load_inputs(args.inputs, tuple(trained.data.input_shape), args.invert)
            print(f"ok: {args.model} and {len(args.inputs)} input file(s) checked")
            return 0
        rows = predictions(trained, args)
    except errors.Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows)
    return 0
