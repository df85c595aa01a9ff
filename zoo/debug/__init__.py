"""The divergence finder: every module output of the PyTorch model against the flatbuffer's intermediate tensor of
the same module (our lowering names each op after its module path), the first node that leaves the recipe's bounds,
and per-op blame for quantization (`python -m zoo.debug`, docs/debug.md)."""
