"""zoo: a declarative model zoo turning HF-style checkpoints into verified LiteRT models."""

import importlib.metadata

__version__ = importlib.metadata.version("zoo")
