"""Optuna studies: the `search` command, search spaces, shared storage, trials and the study report."""
