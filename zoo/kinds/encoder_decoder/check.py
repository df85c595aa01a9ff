"""The encoder-decoder's post-export check: `encode` and greedy `decode` steps of the flatbuffer against our
PyTorch model teacher-forced on the same tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.check import as_torch, cache_names, logit_metrics, padded
from zoo.export.simulate import Rounding
from zoo.kinds.encoder_decoder.gate import Seq2SeqGate


@torch.no_grad()
def run_seq2seq_check(
    path: Path, model: nn.Module, gate: Seq2SeqGate, cfg, rounds: dict[str, Rounding]
) -> tuple[dict[str, float], int]:
    """`encode` of the check prompt (padded, masked) vs our encoder; `decode` steps teacher-forced by the PyTorch
    model's greedy tokens, each side with its own caches, and the PyTorch steps again with the recipe's rounding
    (`rounds`, zoo/export/simulate.py) for the KL bound; then a free-running greedy generation through the
    flatbuffer alone against transformers' greedy tokens (`gate.reference_greedy`)."""
    from ai_edge_litert.interpreter import Interpreter

    from zoo.export.simulate import simulated

    interpreter = Interpreter(model_path=str(path), num_threads=cfg.threads)
    names = [f"cross_{kind}_{i}" for i in range(model.arch.num_layers) for kind in ("k", "v")]
    feed = padded(list(gate.inputs[0]), cfg.export.encoder_len)
    mask = torch.from_numpy(feed["attention_mask"]).long()
    lite = interpreter.get_signature_runner("encode")(**feed)
    lite_cross = {n: lite[n] for n in names}
    decode = interpreter.get_signature_runner("decode")
    start, steps = model.arch.decoder_start_token, min(cfg.export.check_steps, cfg.export.kv_cache_max)

    def lite_step(token: int, pos: int, cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        out = decode(
            tokens=np.array([[token]], np.int32),
            input_pos=np.array([pos], np.int32),
            attention_mask=feed["attention_mask"],
            **lite_cross,
            **dict(zip(cache_names(len(cache)), cache)),
        )
        return out["logits"][0, -1], [out[n] for n in cache_names(len(cache))]

    def reference(forced: list[int] | None = None) -> tuple[np.ndarray, list[int], np.ndarray]:
        """The PyTorch model's encoder states, the decoder tokens it read (`forced`, or its own greedy ones from the
        start token) and its logits [steps, V] at them."""
        states = model.encode(**as_torch(feed))
        cross = [t for pair in model.cross_kv(states) for t in pair]
        cross = list(zip(cross[0::2], cross[1::2]))
        cache, token, tokens, out = model.empty_cache(cfg.export.kv_cache_max), start, [], []
        for pos in range(steps):
            token = forced[pos] if forced else token
            logits, cache = model(torch.tensor([[token]]), torch.tensor([pos]), cache, cross, mask)
            tokens.append(token)
            out.append(logits[0, -1].numpy())
            token = int(logits[0, -1].argmax())
        return states.numpy(), tokens, np.stack(out)

    states, fed, want = reference()
    empty = [t.numpy().astype(np.float32) for pair in model.empty_cache(cfg.export.kv_cache_max) for t in pair]
    got, cache = [], empty
    for pos, token in enumerate(fed):
        logits, cache = lite_step(token, pos, cache)
        got.append(logits)
    metrics = logit_metrics(want, np.stack(got))
    metrics["max_abs_diff"] = max(metrics["max_abs_diff"], float(np.abs(lite["encoder_states"] - states).max()))
    if rounds:
        with simulated(model, rounds):
            metrics["simulated_kl"] = logit_metrics(want, reference(fed)[2])["kl"]
    reference_greedy, tokens, cache, token = list(gate.reference_greedy), [], empty, start
    for pos in range(len(reference_greedy)):
        logits, cache = lite_step(token, pos, cache)
        token = int(logits.argmax())
        tokens.append(token)
    metrics["greedy"] = float(np.mean(np.array(tokens) == np.array(reference_greedy)))
    return metrics, steps
