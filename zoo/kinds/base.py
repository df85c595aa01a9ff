"""What a model kind is: the one object the stages ask about everything that differs between kinds of model
(decoder, encoder-decoder, encoder ...), so that adding a kind is adding one package (or module) to zoo/kinds/.

A kind's package holds its own gate, check, eval and programs (zoo/kinds/decoder/ ...); what they share without
knowing any kind stays below them: architectures/ the modules, golden.py the reference model and GateResult,
check.py the logit metrics and bounds, eval/ the text and its metrics, export/ the lowering and the converter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from torch import nn

from zoo.schema import ArchConfig, ExportConfig, KVLayout, ZooConfig

if TYPE_CHECKING:  # both import torch and TensorFlow machinery a config check does not need
    from zoo.checkpoint import Weights
    from zoo.export.signatures import Program
    from zoo.golden import GateResult


class ModelKind(ABC):
    """One kind of model, named by an entry's `model.kind`."""

    name: ClassVar[str]
    # Quant components (zoo/export/recipe.py): component -> regex searched in our weight names and op scopes, the
    # first that matches names the component. Only components the kind's module names; a recipe that sets another
    # is refused before any work.
    components: ClassVar[Mapping[str, str]]
    # Whether zoo's prefill/decode runtime (zoo/runtime: generate, bench, the web bundle) can run its flatbuffer.
    generates: ClassVar[bool] = False
    # Whether its gate and check run a model whose weights stay on the meta device, read a layer at a time
    # (zoo/stream.py); other kinds always get the whole model in memory.
    streams: ClassVar[bool] = False

    def problems(self, cfg: ZooConfig) -> list[str]:
        """What is wrong with `cfg` for this kind only (one line each); `kind_of` reports them all at once."""
        return []

    @abstractmethod
    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        """The module with freshly initialised parameters (the checkpoint fills them next), in eval mode."""

    # --- the golden gate (its gate.py, over zoo/golden.py) ---
    @abstractmethod
    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list:
        """The fixed inputs of the gate and of golden/ files, in the kind's own type (token ids for the text kinds;
        anything its gate, check and programs take)."""

    @abstractmethod
    def gate(
        self, model: nn.Module, weights: Weights, hf: nn.Module, inputs: list, cfg: ZooConfig, tokenizer
    ) -> GateResult:
        """Ours against the transformers reference on the golden inputs (`weights`: ours by name, for a streamed
        model), as the kind's own GateResult: what its check reads and the line it says."""

    @abstractmethod
    def reference_arrays(self, hf: nn.Module, inputs: list, cfg: ZooConfig) -> dict[str, np.ndarray]:
        """What golden/ stores, from transformers only."""

    @abstractmethod
    def compare(self, model: nn.Module, arrays: dict[str, np.ndarray], cfg: ZooConfig) -> dict:
        """Ours against a stored golden file: max_abs_diff, greedy_equal, greedy_total."""

    # --- export and the post-export check ---
    def programs(self, model: nn.Module, cfg: ZooConfig) -> list[Program]:
        """The signatures: a step over the model, example inputs and the names of its inputs and outputs each."""
        raise NotImplementedError(f"kind {self.name}: give its signatures (programs) or its own export")

    def export(
        self, model: nn.Module, path: Path, cfg: ZooConfig, weights: Mapping[str, np.ndarray] | None = None
    ) -> list[str]:
        """The multi-signature flatbuffer at `path`, quantized by cfg.quant; returns its signature names. `weights`:
        the values of `model`'s meta parameters by state name, each read once (zoo/export/weights.py's
        WeightSource); None: the model's own tensors."""
        from zoo.export.programs import export_model

        return export_model(model, lambda m: self.programs(m, cfg), path, cfg.quant, self.components, weights)

    @abstractmethod
    def check(
        self, path: Path, model: nn.Module, weights: Weights, gate: GateResult, cfg: ZooConfig
    ) -> tuple[dict[str, float], int]:
        """The flatbuffer against our model on the gate's inputs (`gate`: this kind's GateResult): metrics named as
        zoo/check.py's check_failures bounds them, and how many steps or inputs were compared."""

    def debug_programs(self, model: nn.Module, inputs: list, cfg: ZooConfig) -> list[Program]:
        """The signature calls the divergence finder (zoo/debug/) compares, each a Program whose `args` are the real
        inputs of one call on the first of `inputs` (the golden inputs)."""
        raise NotImplementedError(f"kind {self.name}: give the signature calls the finder compares (debug_programs)")

    # --- the eval on real text (zoo/eval/) ---
    def eval_figures(self, cfg: ZooConfig, path: Path, hf: nn.Module, text: str, tokenizer) -> dict:
        """The eval section's figures (with `text_tokens` and `ctx`), flatbuffer against transformers."""
        from zoo.eval.text import EvalError

        raise EvalError(f"kind {self.name} has no eval on text")


def fixed_length_problems(cfg: ZooConfig) -> list[str]:
    """Kinds whose signatures take a fixed-length, masked input (`export.encoder_len`) and no decoder cache
    layout other than btnh."""
    problems = []
    if cfg.export.kv_layout is not KVLayout.btnh:
        problems.append(f"export.kv_layout={cfg.export.kv_layout.value} is for decoder entries; use btnh")
    if not 0 < cfg.export.encoder_len <= cfg.model.arch.max_positions:
        problems.append(
            f"export.encoder_len={cfg.export.encoder_len} must be in 1..model.arch.max_positions="
            f"{cfg.model.arch.max_positions}"
        )
    return problems


def kv_cache_problems(cfg: ZooConfig) -> list[str]:
    """Kinds with a KV cache: every slot must be a position the model has."""
    if cfg.export.kv_cache_max > cfg.model.arch.max_positions:
        return [
            f"export.kv_cache_max={cfg.export.kv_cache_max} exceeds model.arch.max_positions="
            f"{cfg.model.arch.max_positions}"
        ]
    return []
