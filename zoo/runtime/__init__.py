"""Running exported flatbuffers: `LiteModel` (signatures run in place on one KV cache), the generate loop and sampling.
It imports nothing of the build side (no torch, transformers or TensorFlow; tests/test_house.py): the tokenizer is
an object it is given, loaded by zoo/checkpoint/tokenizer.py or zoo/cache.py.

    from zoo.runtime import LiteModel, Generator, SamplingConfig
    gen = Generator(LiteModel("model.tflite", "btnh"), tokenizer, stop_ids=[2])
    gen.generate("What is the capital of France?", 32, SamplingConfig(), on_text=print)
"""

from zoo.errors import InputError
from zoo.runtime.generate import Generator, Result, Stats, stream
from zoo.runtime.model import LiteModel
from zoo.schema import SamplingConfig

__all__ = ["Generator", "InputError", "LiteModel", "Result", "SamplingConfig", "Stats", "stream"]
