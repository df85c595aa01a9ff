"""Export of zoo models to LiteRT (.tflite): torch.export, our ATen -> TF lowering, the TFLite converter.

Import the modules themselves (`zoo.export.convert`, `zoo.export.lower`): this package imports nothing, so that
`zoo.export.recipe` (checked before any work) does not load TensorFlow.
"""
