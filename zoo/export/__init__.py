"""Export of zoo models to LiteRT (.tflite): torch.export, our ATen -> TF lowering, the TFLite converter."""
from zoo.export.convert import export_tflite
from zoo.export.lower import LoweringError, lower

__all__ = ["LoweringError", "export_tflite", "lower"]
