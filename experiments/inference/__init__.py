"""Using a trained model: `evaluate` it on any data, `predict` from image files, `serve` it.

What MODEL may be, for every command: `reference.py`.
"""
