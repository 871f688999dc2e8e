"""Tracking: the MLflow store, what every run logs (figures, judgement, model summary), health checks.

Lowest layer above `experiments.errors`: nothing here imports training, search or reports.
"""
