"""Checkpoint sources (one HF-named tensor dict + the checkpoint's config) and the strict mapping-rule engine."""

from zoo.checkpoint.mapping import MappingError, load
from zoo.checkpoint.sources import Checkpoint, CheckpointError, check_config, resolve

__all__ = ["Checkpoint", "CheckpointError", "MappingError", "check_config", "load", "resolve"]
