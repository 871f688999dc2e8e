"""Using a trained model: `evaluate` it on any data, `predict` from image files, `serve` it.

MODEL, for every command, is a run id, a `runs:/RUN_ID[/model]` or `models:/NAME/VERSION`
(or `models:/m-...`) URI, or a local checkpoint with its run's `config.yaml` beside it
(`reference.resolve`).
"""
