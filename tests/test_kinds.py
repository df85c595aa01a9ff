"""Model kinds (zoo/kinds/): a fourth and a fifth kind plug in, each defined and registered here without any edit to
zoo, and run through the pipeline's own stages: build, golden gate, export, check, report. The fifth takes its own
input type (float feature vectors, not token ids)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from zoo import golden, pipeline
from zoo.architectures.encoder import Encoder
from zoo.architectures.mha import padding_bias
from zoo.check import padded
from zoo.errors import ConfigError
from zoo.exact import float64
from zoo.export.signatures import Program
from zoo.kinds import KINDS, kind_of, register
from zoo.kinds.base import ModelKind, fixed_length_problems
from zoo.results import Gate
from zoo.schema import ArchConfig, ExportConfig, ZooConfig

from conftest import compose_cfg

TOY = ["model=minilm_l6", "variant=small", "model.kind=token_states", "export.encoder_len=16"]


@torch.no_grad()
def reference_states(hf: nn.Module, ids: list[int]) -> torch.Tensor:
    """transformers' last hidden states [S, dim]: the toy kind's reference call."""
    return hf(torch.tensor([ids])).last_hidden_state[0]


@torch.no_grad()
def our_states(model: nn.Module, ids: list[int]) -> torch.Tensor:
    return model.hidden(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.int64))[0]


class States(nn.Module):
    """The one signature: tokens, attention_mask [1, S] -> last hidden states [1, S, dim]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, attention_mask) -> torch.Tensor:
        return self.model.hidden(tokens, attention_mask)


@dataclass(frozen=True)
class StatesGate(golden.GateResult):
    """The toy kind's verdict and its own line."""

    def line(self) -> str:
        f = self.figures
        return f"golden {'PASS' if self.passed else 'FAIL'}: max |hidden state diff| {f.max_abs_diff:.2e}"


class TokenStates(ModelKind):
    """Per-token features of a BERT encoder (what a token classifier's head reads), built from the encoder
    module: another kind on an existing architecture, with its own reference, signature and check."""

    name = "token_states"
    components = {"embedding": r"word_embeddings"}

    def problems(self, cfg: ZooConfig) -> list[str]:
        return fixed_length_problems(cfg)

    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        return Encoder(arch).eval()

    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list[list[int]]:
        gen = torch.Generator().manual_seed(cfg.seed)
        return [torch.randint(cfg.model.arch.vocab_size, (n,), generator=gen).tolist() for n in (5, 9)]

    def gate(self, model, weights, hf, inputs, cfg, tokenizer) -> StatesGate:
        figures = golden.GateFigures(atol=cfg.golden.atol, decode_atol=cfg.golden.decode_atol)
        figures.max_abs_diff = max(
            float((our_states(model, ids) - reference_states(hf, ids)).abs().max()) for ids in inputs
        )
        return StatesGate(figures, tuple(inputs))

    def reference_arrays(self, hf, inputs, cfg) -> dict[str, np.ndarray]:
        return {f"p{p}_states_value": reference_states(hf, ids).numpy() for p, ids in enumerate(inputs)}

    def compare(self, model, arrays, cfg) -> dict:
        diffs = [
            float((our_states(model, ids) - torch.from_numpy(arrays[f"p{p}_states_value"])).abs().max())
            for p, ids in enumerate(self.golden_inputs(cfg, None))
        ]
        return {"max_abs_diff": max(diffs), "greedy_equal": 0, "greedy_total": 0}

    def programs(self, model, cfg) -> list[Program]:
        n = cfg.export.encoder_len
        example = (torch.zeros(1, n, dtype=torch.int64), torch.ones(1, n, dtype=torch.int64))
        return [Program("states", States(model), example, ["tokens", "attention_mask"], ["states"])]

    def check(self, path, model, weights, gate, cfg) -> tuple[dict[str, float], int]:
        from ai_edge_litert.interpreter import Interpreter

        run = Interpreter(model_path=str(path), num_threads=cfg.threads).get_signature_runner("states")
        diffs = []
        for ids in gate.inputs:
            feed = padded(ids, cfg.export.encoder_len)
            lite = run(**feed)["states"][0, : len(ids)]
            ours = model.hidden(*(torch.from_numpy(v).long() for v in feed.values()))[0, : len(ids)]
            diffs.append(float(np.abs(lite - ours.numpy()).max()))
        return {"max_abs_diff": max(diffs)}, len(diffs)


@pytest.fixture
def token_states():
    kind = register(TokenStates())
    yield kind
    del KINDS[kind.name]


def test_an_unregistered_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="'token_states' is not a registered model kind"):
        compose_cfg(TOY)


def test_a_registered_kind_runs_through_the_pipeline(token_states, tmp_path):
    """Its config validates by its own checks, its components check the recipe, and the run's stages call it."""
    with pytest.raises(ConfigError, match="export.kv_layout=transposed is for decoder entries"):
        compose_cfg([*TOY, "export.kv_layout=transposed"])
    cfg = compose_cfg(TOY)
    pipeline.preflight(cfg)
    report = pipeline.run(cfg, tmp_path)
    assert report["status"] == "ok"
    assert report["golden"]["passed"] and report["golden"]["prompts"] == token_states.golden_inputs(cfg, None)
    assert report.results[Gate].result.line().startswith("golden PASS: max |hidden state diff|")
    assert report["export"]["signatures"] == ["states"]
    assert report["check"]["passed"] and report["check"]["positions"] == 2
    assert report["check"]["max_abs_diff"] <= 1e-4, report["check"]
    assert pipeline.check_line(report["check"]).startswith("check PASS over 2 steps or inputs: max_abs_diff")


def test_a_registered_kind_compares_to_its_golden_arrays(token_states):
    """The golden-file functions of the kind: transformers' arrays, then ours against them."""
    cfg = compose_cfg(TOY)
    checkpoint = pipeline.resolve_checkpoint(cfg).checkpoint
    loaded = pipeline.load_model(cfg, kind_of(cfg), checkpoint)
    hf = golden.reference_model(cfg.model.reference, checkpoint)
    with float64(loaded.model, hf):
        arrays = token_states.reference_arrays(hf, token_states.golden_inputs(cfg, None), cfg)
        assert token_states.compare(loaded.model, arrays, cfg)["max_abs_diff"] <= cfg.golden.atol


# --- a kind whose input is not token ids: float feature vectors (what an audio or vision front end hands a
# transformer), fed to the BERT stack in place of its token embeddings, as transformers' `inputs_embeds` does ---

FEATURES = ["model=minilm_l6", "variant=small", "model.kind=feature_states", "export.encoder_len=16"]


class FeatureStack(nn.Module):
    """features [1, S, dim] float, attention_mask [1, S] -> last hidden states [1, S, dim]: BertEmbeddings with
    `inputs_embeds` (position and token-type embeddings added, then its LayerNorm), then the layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        emb = self.model.embeddings
        x = (
            features
            + emb.position_embeddings(torch.arange(features.shape[1]))[None]
            + emb.token_type_embeddings.weight[0]
        )
        x, bias = emb.LayerNorm(x), padding_bias(attention_mask)
        for layer in self.model.encoder.layer:
            x = layer(x, bias)
        return x


@torch.no_grad()
def reference_features(hf: nn.Module, features: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(features)[None].to(hf.dtype)
    return hf(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.int64)).last_hidden_state[0]


@torch.no_grad()
def our_features(model: nn.Module, features: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(features)[None]
    return FeatureStack(model)(x, torch.ones(x.shape[:2], dtype=torch.int64))[0]


@dataclass(frozen=True)
class FeatureGate(golden.GateResult):
    def line(self) -> str:
        return f"golden {'PASS' if self.passed else 'FAIL'}: max |state diff| {self.figures.max_abs_diff:.2e}"

    def inputs_report(self) -> list:
        return [{"features": list(x.shape)} for x in self.inputs]  # the shapes, not 16 x 384 floats each


class FeatureStates(ModelKind):
    """Hidden states of a BERT stack over float feature vectors: inputs, reference call, gate, signature and
    check all of its own; nothing in zoo/ knows of it."""

    name = "feature_states"
    components = {"attention": r"attention"}

    def problems(self, cfg: ZooConfig) -> list[str]:
        return fixed_length_problems(cfg)

    def build(self, arch: ArchConfig, export: ExportConfig) -> nn.Module:
        return Encoder(arch).eval()

    def golden_inputs(self, cfg: ZooConfig, tokenizer) -> list[np.ndarray]:
        rng = np.random.default_rng(cfg.seed)
        return [rng.standard_normal((n, cfg.model.arch.dim)).astype(np.float32) for n in (6, 11)]

    def gate(self, model, weights, hf, inputs, cfg, tokenizer) -> FeatureGate:
        figures = golden.GateFigures(atol=cfg.golden.atol, decode_atol=cfg.golden.decode_atol)
        figures.max_abs_diff = max(
            float((our_features(model, x) - reference_features(hf, x)).abs().max()) for x in inputs
        )
        return FeatureGate(figures, tuple(inputs))

    def reference_arrays(self, hf, inputs, cfg) -> dict[str, np.ndarray]:
        return {f"p{p}_states_value": reference_features(hf, x).numpy() for p, x in enumerate(inputs)}

    def compare(self, model, arrays, cfg) -> dict:
        inputs = self.golden_inputs(cfg, None)
        diffs = [
            float((our_features(model, x) - torch.from_numpy(arrays[f"p{p}_states_value"])).abs().max())
            for p, x in enumerate(inputs)
        ]
        return {"max_abs_diff": max(diffs), "greedy_equal": 0, "greedy_total": 0}

    def programs(self, model, cfg) -> list[Program]:
        n, dim = cfg.export.encoder_len, cfg.model.arch.dim
        example = (torch.zeros(1, n, dim), torch.ones(1, n, dtype=torch.int64))
        return [Program("states", FeatureStack(model), example, ["features", "attention_mask"], ["states"])]

    def check(self, path, model, weights, gate, cfg) -> tuple[dict[str, float], int]:
        from ai_edge_litert.interpreter import Interpreter

        run = Interpreter(model_path=str(path), num_threads=cfg.threads).get_signature_runner("states")
        n, diffs = cfg.export.encoder_len, []
        for x in gate.inputs:
            features = np.zeros((1, n, x.shape[1]), np.float32)
            features[0, : len(x)] = x
            mask = (np.arange(n) < len(x)).astype(np.int32)[None]  # the converter's int32 for int64 inputs
            lite = run(features=features, attention_mask=mask)["states"][0, : len(x)]
            ours = FeatureStack(model)(torch.from_numpy(features), torch.from_numpy(mask).long())[0, : len(x)]
            diffs.append(float(np.abs(lite - ours.numpy()).max()))
        return {"max_abs_diff": max(diffs)}, len(diffs)


def test_a_kind_with_its_own_input_type_runs_build_gate_export_check_report(tmp_path):
    """The fourth kind takes float feature vectors, not token ids: defined and registered in this module only, it
    goes through the pipeline's own stages (gate against transformers' `inputs_embeds`, export, check of the
    flatbuffer, report.json) like the built-in kinds."""
    kind = register(FeatureStates())
    try:
        cfg = compose_cfg(FEATURES)
        pipeline.preflight(cfg)
        report = pipeline.run(cfg, tmp_path)
    finally:
        del KINDS[kind.name]
    assert report["status"] == "ok", report.data.get("error")
    dim = cfg.model.arch.dim  # the small variant's
    assert report["golden"]["passed"] and report["golden"]["prompts"] == [
        {"features": [6, dim]},
        {"features": [11, dim]},
    ]
    assert report["golden"]["max_abs_diff"] <= cfg.golden.atol
    assert report["export"]["signatures"] == ["states"]
    assert report["check"]["passed"] and report["check"]["positions"] == 2
    assert report["check"]["max_abs_diff"] <= 1e-4, report["check"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["golden"]["prompts"] == report["golden"]["prompts"]
