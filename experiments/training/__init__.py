"""Training: the config parser, the runner, its callbacks, resume, threads and DDP ranks."""
