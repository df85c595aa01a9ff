"""Quality you can compare: a flatbuffer measured on real text against transformers fp32 with llama.cpp's method
(perplexity, KL divergence, same top, Δp), per model kind; the pipeline's `eval` stage and `python -m zoo.eval`."""

from zoo.eval.stage import eval_line, run_eval

__all__ = ["eval_line", "run_eval"]
