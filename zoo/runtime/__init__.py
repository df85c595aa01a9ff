"""Running exported flatbuffers: `LiteModel` (signatures run in place on one KV cache), the generate loop and sampling,
tokenizer loading, and the export cache `zoo.generate` uses.

    from zoo.runtime import LiteModel, Generator, SamplingConfig
    gen = Generator(LiteModel("model.tflite", "btnh"), tokenizer, stop_ids=[2])
    gen.generate("What is the capital of France?", 32, SamplingConfig(), on_text=print)
"""
from zoo.config import SamplingConfig
from zoo.runtime.generate import Generator, Result, Stats, stream
from zoo.errors import InputError
from zoo.runtime.model import LiteModel

__all__ = ["InputError", "Generator", "LiteModel", "Result", "SamplingConfig", "Stats", "stream"]
