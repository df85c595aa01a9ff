"""Checkpoint sources (HF-named tensors read one at a time + the checkpoint's config) and the strict mapping-rule
engine."""

from zoo.checkpoint.mapping import MappingError, Weights, load, materialize, weights_for
from zoo.checkpoint.sources import Checkpoint, CheckpointError, check_config, resolve

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "MappingError",
    "Weights",
    "check_config",
    "load",
    "materialize",
    "resolve",
    "weights_for",
]
