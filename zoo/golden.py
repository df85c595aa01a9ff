"""The golden gate's kind-neutral parts: our re-authored model must reproduce `transformers` on the same weights
before any export; each kind's gate (zoo/kinds/<kind>/gate.py) compares what its model computes.

Reference values only ever come from the transformers class named in the entry (`reference_*` functions never
touch our model); `golden/` files hold top-k logits and greedy tokens of that reference for a fixed prompt set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.checkpoint import Checkpoint
from zoo.checkpoint.sources import hf_config_class
from zoo.errors import CheckpointError
from zoo.runtime.tokenizer import encode_prompt
from zoo.schema import GoldenConfig, ReferenceConfig
from zoo.stream import Source

TOP_K = 8


def reference_model(reference: ReferenceConfig, checkpoint: Checkpoint, resident: bool = True) -> nn.Module:
    """The transformers model class of the entry, built from the checkpoint's own config and tensors (float32).
    Not `resident`: its parameters stay on the meta device (buffers are real) for `reference_source` to stream."""
    from accelerate import init_empty_weights
    from transformers.initialization import no_init_weights

    model_cls, _ = hf_config_class(reference)
    config = checkpoint.config
    config._attn_implementation = "eager"
    if not resident:
        with init_empty_weights(include_buffers=False):
            model = model_cls(config).float().eval()
        model.tie_weights()
        return model
    with no_init_weights():
        model = model_cls(config)
    tensors = dict(checkpoint.tensors)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    unexpected = [k for k in unexpected if k not in dict(model.named_buffers())]  # e.g. BERT's old position_ids
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"{reference.hf_class} does not take this checkpoint: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    # As from_pretrained does: a tied tensor the checkpoint stores itself stays its own (transformers 5 builds every
    # T5 tied, yet a flan-t5 checkpoint has an lm_head that differs from its embedding).
    own = {k: tensors[k] for k in tied if k in tensors}
    model.load_state_dict(own, strict=False, assign=True)
    return model.float().eval()


def reference_source(hf: nn.Module, checkpoint: Checkpoint, hf_class: str) -> Source:
    """Parameter name -> the checkpoint tensor, for `stream.streamed(hf, ...)`: a tied parameter reads the tensor the
    checkpoint stores under another of its names."""
    names: dict[int, list[str]] = {}
    for name, param in hf.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    stored = {}
    for group in names.values():
        present = [n for n in group if n in checkpoint.tensors]
        if not present:
            raise CheckpointError(f"{hf_class} does not take this checkpoint: missing {group[0]}")
        stored.update({n: n if n in checkpoint.tensors else present[0] for n in group})
    extra = sorted(set(checkpoint.tensors) - set(stored))
    if extra:
        raise CheckpointError(f"{hf_class} does not take this checkpoint: unexpected {extra[:5]}")
    return lambda name, dtype: checkpoint.tensors.get(stored[name], dtype)


def prompt_ids(golden: GoldenConfig, tokenizer, vocab_size: int, seed: int, chat: bool) -> list[list[int]]:
    """The fixed prompt set: text prompts through the tokenizer, or seeded random ids for entries without one."""
    if tokenizer is not None:
        return [encode_prompt(tokenizer, text, chat) for text in golden.prompts]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(vocab_size, (n,), generator=gen).tolist() for n in golden.random_prompt_lens]


@dataclass
class GateFigures:
    """What a gate measures, filled in as it goes (each kind's gate.py), then frozen into the kind's GateResult."""

    max_abs_diff: float = 0.0
    worst: dict = field(default_factory=dict)
    greedy_equal: int = 0
    greedy_total: int = 0
    decode_vs_full_max_abs_diff: float = 0.0
    atol: float = 0.0
    decode_atol: float = 0.0
    # hidden state after each layer (index 0: the embeddings, i: after layer i-1, last: the final norm), ours vs
    # transformers, as max |diff| / max(1, max |reference|); empty for kinds that do not compare layers
    layers: list[float] = field(default_factory=list)

    @property
    def greedy_match(self) -> bool:
        return self.greedy_equal == self.greedy_total

    @property
    def first_layer_off(self) -> int | None:
        """The first hidden state (index as in `layers`) past atol: where ours starts to differ."""
        return next((i for i, d in enumerate(self.layers) if d > self.atol), None)

    @property
    def passed(self) -> bool:
        decode_ok = self.decode_vs_full_max_abs_diff <= self.decode_atol
        layers_ok = self.first_layer_off is None
        return self.max_abs_diff <= self.atol and decode_ok and self.greedy_match and layers_ok

    def report(self) -> dict:
        return {
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "atol": self.atol,
            "worst": self.worst,
            "greedy_match": self.greedy_match,
            "greedy_tokens_equal": f"{self.greedy_equal}/{self.greedy_total}",
            "decode_vs_full_max_abs_diff": self.decode_vs_full_max_abs_diff,
            "decode_atol": self.decode_atol,
            **({"layers_max_rel_diff": self.layers, "first_layer_off": self.first_layer_off} if self.layers else {}),
        }


@dataclass(frozen=True)
class GateResult:
    """A kind's gate verdict as the later stages take it: its figures and the golden inputs in the kind's own type
    (the check and the divergence finder run them again). Each kind subclasses it with what its check reads and
    says its own line (zoo/kinds/<kind>/gate.py); report.json's `golden` section is `to_report()`."""

    figures: GateFigures
    inputs: tuple

    @property
    def passed(self) -> bool:
        return self.figures.passed

    def summary(self) -> str:
        """The figures that decide the verdict (each kind says its own)."""
        f = self.figures
        return f"max |diff| {f.max_abs_diff:.2e} (atol {f.atol:.0e})"

    def line(self) -> str:
        return f"golden {'PASS' if self.passed else 'FAIL'}: {self.summary()}"

    def inputs_report(self) -> list:
        """The inputs as report.json holds them (token lists as they are)."""
        return [list(i) for i in self.inputs]

    def to_report(self) -> dict:
        prompts = self.inputs_report()
        return {**self.figures.report(), "check_prompt": prompts[0], "prompts": prompts, "dtype": "float64"}


def worst_at(
    result: GateFigures, diff: torch.Tensor, ours: torch.Tensor, ref: torch.Tensor, column: str = "index", **where
) -> None:
    """Record diff's maximum in result when it is the worst so far (row, and column named `column`, of a 2-D diff)."""
    if float(diff.max()) >= result.max_abs_diff:
        row, col = divmod(int(diff.argmax()), diff.shape[-1])
        result.max_abs_diff = float(diff.max())
        result.worst = {
            **where,
            "position": row,
            column: col,
            "ours": float(ours[row, col]),
            "reference": float(ref[row, col]),
        }


# --- encoder (BERT): last hidden states, pooled sentence embeddings, their cosine similarities ----------------------


def golden_positions(length: int) -> list[int]:
    return sorted({0, length // 2, length - 1})
