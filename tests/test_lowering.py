"""The export path: torch.export -> our ATen->TF lowering -> multi-signature .tflite, checked against torch."""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction
from torch.export import ExportedProgram

from zoo.architectures.layers import attention_mask
from zoo.export.convert import op_counts
from zoo.export.lower import LoweringError, lower
from zoo.export.private import SavedModelConverter
from zoo.export.programs import export_model
from zoo.kinds import KINDS
from zoo.kinds.decoder.programs import decoder_programs
from zoo.schema import (
    Activation,
    ArchConfig,
    AttentionConfig,
    ExportConfig,
    KVLayout,
    LayerType,
    MLPConfig,
    MLPType,
    NormConfig,
    NormType,
    Positions,
    QuantConfig,
    QuantMode,
    Residual,
    RopeConfig,
)

KV = 32


def export_tflite(model, path, kv, prefill_lens, prefill_logits="last", mask_as_input=False, recipe=None) -> Path:
    """A decoder exported as its kind exports it (zero points, programs, the one export path), from arguments."""
    programs = lambda m: decoder_programs(m, kv, list(prefill_lens), prefill_logits, mask_as_input)  # noqa: E731
    export_model(model, programs, Path(path), recipe or QuantConfig(), KINDS["decoder"].components)
    return Path(path)


PREFILL = 8
DECODE_STEPS = 16


def llama(**arch) -> ArchConfig:
    base = dict(
        vocab_size=100,
        num_layers=2,
        dim=64,
        mlp=MLPConfig(hidden_dim=128),
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
    )
    return ArchConfig(**{**base, **arch})


def gpt2() -> ArchConfig:
    return llama(
        norm=NormConfig(type=NormType.layer, bias=True),
        positions=Positions.learned,
        lm_head_bias=True,
        mlp=MLPConfig(type=MLPType.plain, activation=Activation.gelu, hidden_dim=128, bias=True),
        attention=AttentionConfig(num_heads=4, num_kv_heads=4, qkv_bias=True, out_bias=True),
    )


def gemma() -> ArchConfig:
    return llama(
        attention=AttentionConfig(
            num_heads=4,
            num_kv_heads=1,
            head_dim=32,
            qk_norm=True,
            logit_softcap=30.0,
            query_pre_attn_scalar=24.0,
            sliding_window=4,
            layer_types=[LayerType.sliding, LayerType.full],
        ),
        rope=RopeConfig(local_theta=100.0),
        norm=NormConfig(zero_centered=True),
        scale_embeddings=True,
        post_attn_norm=True,
        post_mlp_norm=True,
        final_logit_softcap=20.0,
        tie_embeddings=True,
        mlp=MLPConfig(activation=Activation.gelu_tanh, hidden_dim=128),
    )


def phi() -> ArchConfig:
    return llama(
        residual=Residual.parallel,
        rope=RopeConfig(fraction=0.4),
        norm=NormConfig(type=NormType.layer, bias=False),
        mlp=MLPConfig(type=MLPType.plain, activation=Activation.gelu_tanh, hidden_dim=128),
        lm_head_bias=True,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, qkv_bias=True),
    )


def model(arch: ArchConfig, layout: KVLayout, read_multiple: int = 0) -> torch.nn.Module:
    """Seeded, with parameters perturbed so norms and biases are not trivially 1 / 0."""
    torch.manual_seed(0)
    m = KINDS["decoder"].build(arch, ExportConfig(kv_layout=layout, kv_read_multiple=read_multiple))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def max_logit_diff(m: torch.nn.Module, path: Path, mask_as_input: bool, decode_steps: int = DECODE_STEPS) -> float:
    """Prefill then greedy decode steps, fed the same way to torch and to the .tflite signature runners."""
    interpreter = Interpreter(str(path))
    cache = m.empty_cache(KV)
    feed = {f"kv_cache_{kind}_{i}": t.numpy() for i, pair in enumerate(cache) for kind, t in zip("kv", pair)}

    def step(runner: str, tokens: torch.Tensor, pos: torch.Tensor) -> float:
        nonlocal cache, feed
        mask = attention_mask(pos, torch.arange(KV), None) if mask_as_input else None
        with torch.no_grad():
            ref, cache = m(tokens, pos, cache, mask)
        inputs = dict(feed, tokens=tokens.numpy().astype(np.int32), input_pos=pos.numpy().astype(np.int32))
        if mask_as_input:
            inputs["mask"] = mask.numpy()
        out = interpreter.get_signature_runner(runner)(**inputs)
        feed = {k: out[k] for k in feed}
        expected = ref.numpy()[:, -out["logits"].shape[1] :]  # prefill_logits="last" returns one position
        return float(np.abs(out["logits"] - expected).max()), ref[:, -1:].argmax(-1)

    diff, token = step(f"prefill_{PREFILL}", torch.randint(0, m.arch.vocab_size, (1, PREFILL)), torch.arange(PREFILL))
    diffs = [diff]
    for s in range(decode_steps):
        diff, token = step("decode", token, torch.tensor([PREFILL + s]))
        diffs.append(diff)
    return max(diffs)


@pytest.mark.parametrize("layout", list(KVLayout))
def test_signature_names_and_shapes(tmp_path: Path, layout: KVLayout) -> None:
    m = model(llama(), layout)
    path = export_tflite(m, tmp_path / "m.tflite", KV, [4, 8], prefill_logits="last", mask_as_input=True)
    interpreter = Interpreter(str(path))
    k_shape, v_shape = m.kv_shapes(KV)
    caches = {f"kv_cache_{kind}_{i}": list(s) for i in range(2) for kind, s in (("k", k_shape), ("v", v_shape))}
    assert set(interpreter.get_signature_list()) == {"prefill_4", "prefill_8", "decode"}
    for name, t, logits_t in (("prefill_4", 4, 1), ("prefill_8", 8, 1), ("decode", 1, 1)):
        runner = interpreter.get_signature_runner(name)
        inputs = {k: (list(v["shape"]), v["dtype"]) for k, v in runner.get_input_details().items()}
        outputs = {k: list(v["shape"]) for k, v in runner.get_output_details().items()}
        assert inputs == {
            "tokens": ([1, t], np.int32),
            "input_pos": ([t], np.int32),
            "mask": ([1, 1, t, KV], np.float32),
            **{k: (s, np.float32) for k, s in caches.items()},
        }
        assert outputs == {"logits": [1, logits_t, 100], **caches}


def test_prefill_without_logits(tmp_path: Path) -> None:
    path = export_tflite(model(llama(), KVLayout.btnh), tmp_path / "m.tflite", KV, [8], prefill_logits="none")
    outputs = Interpreter(str(path)).get_signature_runner("prefill_8").get_output_details()
    assert "logits" not in outputs and len(outputs) == 4


def lowering_cases() -> list:
    """Every arch x layout x mask x read_multiple; four of them, which take each value at least once, in the fast
    tier, the rest slow."""
    fast = {(llama, KVLayout.btnh, False, 0), (gpt2, KVLayout.transposed, True, 12)}
    fast |= {(gemma, KVLayout.btnh, True, 12), (phi, KVLayout.transposed, False, 0)}
    combos = itertools.product([llama, gpt2, gemma, phi], list(KVLayout), [False, True], [0, 12])
    return [c if c in fast else pytest.param(*c, marks=pytest.mark.slow) for c in combos]


@pytest.mark.parametrize("arch,layout,mask_as_input,read_multiple", lowering_cases())
def test_fp32_matches_torch(tmp_path: Path, arch, layout: KVLayout, mask_as_input: bool, read_multiple: int) -> None:
    m = model(arch(), layout, read_multiple)
    path = export_tflite(m, tmp_path / "m.tflite", KV, [PREFILL], prefill_logits="all", mask_as_input=mask_as_input)
    assert max_logit_diff(m, path, mask_as_input) <= 1e-4


@pytest.mark.parametrize("layout", [KVLayout.btnh, pytest.param(KVLayout.transposed, marks=pytest.mark.slow)])
def test_attention_reads_only_filled_slots(tmp_path: Path, layout: KVLayout) -> None:
    """With kv_read_multiple=12 a step at position p reads min(ceil((p+1)/12)*12, KV) slots through a run-time SLICE,
    and gives the logits of attention over every slot (the static model) up to the cache's last slot."""
    m = model(gemma(), layout, read_multiple=12)  # sliding-window layers too
    path = export_tflite(m, tmp_path / "m.tflite", KV, [PREFILL], prefill_logits="all")
    interpreter = Interpreter(str(path))
    decode = interpreter._interpreter.GetSubgraphIndexFromSignature("decode")
    ops = op_counts(path.read_bytes())  # prefill and decode: a K and a V slice per layer, one RANGE
    assert ops["SLICE"] == 2 * 2 * m.arch.num_layers and ops["RANGE"] == 2
    assert any(
        -1 in interpreter._interpreter.TensorSizeSignature(i, decode)
        for i in range(interpreter._interpreter.NumTensors(decode))
    )  # a run-time sized tensor exists
    static = model(gemma(), layout)  # the same seeded weights reading all KV slots
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), static.state_dict().values()))
    assert max_logit_diff(static, path, mask_as_input=False, decode_steps=KV - PREFILL) <= 1e-4


def test_fp32_last_logits_match_torch(tmp_path: Path) -> None:
    m = model(llama(), KVLayout.transposed)
    path = export_tflite(m, tmp_path / "m.tflite", KV, [PREFILL], prefill_logits="last", mask_as_input=True)
    assert max_logit_diff(m, path, mask_as_input=True) <= 1e-4


@pytest.mark.parametrize("mode", [QuantMode.none, QuantMode.fp16, QuantMode.int8_dynamic])
def test_only_builtin_ops(tmp_path: Path, mode: QuantMode) -> None:
    recipe = QuantConfig(name=mode.value, mode=mode)
    path = export_tflite(model(gemma(), KVLayout.btnh), tmp_path / "m.tflite", KV, [8], recipe=recipe)
    assert not [op for op in op_counts(path.read_bytes()) if op.startswith("CUSTOM")]


def test_decode_writes_caches_in_place_and_reads_them_untransposed(tmp_path: Path) -> None:
    """Transposed layout: cache writes are DYNAMIC_UPDATE_SLICE and BATCH_MATMUL reads K/V via its adj flags."""
    path = export_tflite(model(gemma(), KVLayout.transposed), tmp_path / "m.tflite", KV, [], mask_as_input=True)
    ops = op_counts(path.read_bytes())
    assert ops["DYNAMIC_UPDATE_SLICE"] == 2 * 2 and ops["BATCH_MATMUL"] == 2 * 2
    assert "SCATTER_ND" not in ops and "TRANSPOSE" not in ops


def test_delegated_graph_is_cut_only_at_the_cache(tmp_path: Path) -> None:
    """Fused q/k/v and gate/up outputs are split by static STRIDED_SLICEs, never SPLIT_V (which XNNPACK leaves to
    a single-threaded builtin): XNNPACK takes everything between one layer's cache writes/reads and the next's."""
    m = model(llama(), KVLayout.transposed, read_multiple=8)
    path = export_tflite(m, tmp_path / "m.tflite", KV, [PREFILL], mask_as_input=True)
    ops = op_counts(path.read_bytes())
    assert "SPLIT_V" not in ops and "SPLIT" not in ops
    interpreter = Interpreter(str(path), num_threads=2)
    interpreter.allocate_tensors()
    partitions = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    assert partitions == m.arch.num_layers + 1


@pytest.mark.slow
def test_weights_shared_between_signatures(tmp_path: Path) -> None:
    arch = llama(vocab_size=16000)  # weights (8 MB) well above the per-signature graph metadata (~30 kB)
    one = export_tflite(model(arch, KVLayout.btnh), tmp_path / "one.tflite", KV, [8])
    three = export_tflite(model(arch, KVLayout.btnh), tmp_path / "three.tflite", KV, [4, 8, 16])
    assert three.stat().st_size <= 1.02 * one.stat().st_size


def test_unknown_op_names_op_and_module() -> None:
    class Inner(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 0)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Inner()

        def forward(self, x):
            return self.block(x) + 1

    program = torch.export.export(Outer(), (torch.ones(3),))
    with pytest.raises(LoweringError, match=r"aten\.cumsum.*module block\).*zoo/export/lower\.py") as err:
        lower(program, {})
    assert "\n" not in str(err.value)


def test_interrupted_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self):
        raise RuntimeError("converter interrupted")

    monkeypatch.setattr(SavedModelConverter, "convert", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        export_tflite(model(llama(), KVLayout.btnh), tmp_path / "m.tflite", KV, [8])
    assert list(tmp_path.iterdir()) == []


def test_programs_and_functions_are_freed_before_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter runs with no exported program or lowered TF function of the export still alive (peak memory)."""
    convert, alive = SavedModelConverter.convert, []

    def counting(self):
        gc.collect()
        alive.extend(type(o).__name__ for o in gc.get_objects() if isinstance(o, (ExportedProgram, ConcreteFunction)))
        return convert(self)

    monkeypatch.setattr(SavedModelConverter, "convert", counting)
    export_tflite(model(llama(), KVLayout.btnh), tmp_path / "m.tflite", KV, [4, 8])
    assert alive == []


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while streaming weights into the file: the previous artifact stays, no temp file is left."""
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous")
    calls = []

    def interrupted(data):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return memoryview(data)

    monkeypatch.setattr("zoo.export.bake.memoryview", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        export_tflite(model(llama(), KVLayout.btnh), target, KV, [8])
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
