"""A run's train, validation and test splits as MLflow dataset inputs (the UI's Dataset column).

Each split is one `mlflow.entities.Dataset` named ``<dataset>-<split>``, its source the data
folder; what its digest hashes: docs/tracking.md (Datasets). Logged once, when the run is created.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: split -> MLflow's dataset context (the values MLflow's own docs use)
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def split_digest(lineage: dict[str, Any], split: str) -> str:
    """16 hex digits that change with the files, the split and the split's role."""
    facts = {k: str(v) for k, v in sorted(lineage.items()) if k.startswith("md5_")}
    for key in ("dataset", "split_seed", "train_size", "val_size", "superclass", "normalize"):
        if key in lineage:
            facts[key] = str(lineage[key])
    facts["split"] = split
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def log_split_inputs(
    client: Any, run_id: str, data: Any, splits: tuple[str, ...] = tuple(CONTEXTS)
) -> None:
    """Log the `splits` of a set-up datamodule as the run's dataset inputs, each an
    `mlflow.entities.Dataset` with its context tag."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    lineage = data.lineage
    source = Path(str(lineage["source_path"]))
    inputs = []
    for split in (s for s in CONTEXTS if s in splits):
        images = getattr(data, f"{split}_x")
        if split == "val" and len(images) == 0:
            continue  # val_size 0: no validation split
        dataset = Dataset(
            name=f"{data.dataset_name}-{split}",
            digest=split_digest(lineage, split),
            source_type="local",
            source=json.dumps({"uri": source.as_uri()}),
            schema=json.dumps(
                {"images": ["float32", [-1, *data.input_shape]], "labels": ["int64", [-1]]}
            ),
            profile=json.dumps({"num_rows": len(images), "classes": len(data.class_names)}),
        )
        inputs.append(
            DatasetInput(dataset, tags=[InputTag("mlflow.data.context", CONTEXTS[split])])
        )
    client.log_inputs(run_id, datasets=inputs)
