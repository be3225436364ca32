"""Reading the checkpoints the framework's trainer writes."""

import torch


def load_checkpoint(path, map_location=None):
    """Load a checkpoint written by the framework's trainer.

    The framework pickles its whole ``Config`` into each checkpoint, which torch >= 2.6
    refuses with its default ``weights_only=True``. Our trainer and loader call this (and only
    they do: no process-wide setting changes). Load only files you trust.
    """
    return torch.load(path, map_location=map_location, weights_only=False)
