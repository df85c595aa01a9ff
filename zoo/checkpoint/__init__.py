"""Checkpoint sources (HF-named tensors read one at a time + the checkpoint's config) and the strict mapping-rule
engine."""

from zoo.checkpoint.mapping import MappingError, Weights, load, materialize, weights_for
from zoo.checkpoint.sources import Checkpoint, CheckpointError, resolve, validate_checkpoint

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "MappingError",
    "Weights",
    "load",
    "materialize",
    "resolve",
    "validate_checkpoint",
    "weights_for",
]
