"""zoo: a declarative model zoo turning HF-style checkpoints into verified LiteRT models."""
