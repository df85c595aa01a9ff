"""The post-export check: the flatbuffer, run by zoo's runtime (decoders) or ai_edge_litert's interpreter
(encoders), against the PyTorch model.

Both sides get the same inputs: one prefill of a fixed prompt, then decode steps whose tokens are the flatbuffer's
own greedy choices (its cache writes are checked by every step that reads them); the PyTorch side runs that
sequence in one full forward, in float64 (zoo/exact.py, as the golden gate does), so the figures measure the
flatbuffer's own error, not whichever way float32 rounding fell in one PyTorch call.
The bounds come from the quant recipe (`quant.check`). Encoder kinds have their own runs below (wired in zoo/kinds/).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.resources import release_memory
from zoo.schema import ExportConfig, PrefillLogits, QuantCheck
from zoo.stream import Source

if TYPE_CHECKING:
    from zoo.export.simulate import Rounding


def prefill_length(prompt_len: int, prefill_lens: list[int]) -> int:
    """The smallest prefill signature that holds the prompt (all but its last token, which decode takes)."""
    fitting = [t for t in sorted(prefill_lens) if t >= prompt_len - 1]
    if not fitting:
        raise ConfigError(
            f"check prompt of {prompt_len} tokens needs a prefill length >= {prompt_len - 1}, "
            f"export.prefill_lens={prefill_lens}: add one that long"
        )
    return fitting[0]


def run_check(
    path: Path,
    model: nn.Module,
    weights: Source,
    prompt: list[int],
    export: ExportConfig,
    threads: int,
    rounds: dict[str, Rounding],
) -> dict:
    """Logits at the same positions of the flatbuffer ('tflite'), the PyTorch model ('torch') and, when the recipe
    rounds anything (`rounds`, zoo/export/simulate.py), the PyTorch model with that rounding ('simulated'): [N, V].

    The flatbuffer prefills the prompt and then decodes `export.check_steps` tokens, each its own greedy choice;
    the PyTorch model then runs that whole sequence once, one layer at a time when streamed (zoo/golden.py
    our_runs: its full forward, which the gate proved equal to its cached decode), plain and simulated from the
    same read of each layer. The runtime (XNNPACK's packed weights) is closed before the PyTorch side reads a
    weight: the two never hold memory at once."""
    from zoo.export.simulate import simulated
    from zoo.golden import our_runs

    got, positions, sequence = flatbuffer_greedy(path, prompt, export, threads)
    release_memory()
    simulate = (lambda: simulated(model, rounds)) if rounds else None
    runs, _ = our_runs(model, weights, [sequence], export.kv_cache_max, simulate=simulate)
    logits = {"tflite": got, "torch": runs[0].logits[positions].numpy()}
    if rounds:
        logits["simulated"] = runs[1].logits[positions].numpy()
    return logits


def flatbuffer_greedy(
    path: Path, prompt: list[int], export: ExportConfig, threads: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """The flatbuffer's logits [N, V] over the prompt's prefill and its own greedy decode steps, the positions they
    are at, and the token sequence it read.

    Run by zoo's runtime (LiteModel: what zoo.generate runs), whose signatures share one packed copy of the weights;
    ai_edge_litert's Interpreter packs them once per signature (Qwen2.5-0.5B int8: 1.9 GiB against 0.8)."""
    from zoo.runtime.model import LiteModel

    t = prefill_length(len(prompt), list(export.prefill_lens))
    body = prompt[:-1]
    lite = LiteModel(path, export.kv_layout, threads, [t])
    try:
        lite.reset()
        ours = lite.step(f"prefill_{t}", body, 0)[0] if body else None
        got, positions = [], []  # prefill logits only at real prompt positions: padding slots are not an output
        if export.prefill_logits is PrefillLogits.all and body:
            got.append(ours[: len(body)])
            positions += range(len(body))
        elif export.prefill_logits is PrefillLogits.last and len(body) == t:
            got.append(ours)
            positions.append(t - 1)
        sequence = list(prompt)
        for step in range(export.check_steps):
            pos = len(sequence) - 1
            logits = lite.step("decode", [sequence[-1]], pos)[0]
            got.append(logits)
            positions.append(pos)
            if step < export.check_steps - 1:
                sequence.append(int(logits[-1].argmax()))
    finally:
        lite.close()
    return np.concatenate(got), positions, sequence


def cache_names(n: int) -> list[str]:
    return [f"kv_cache_{kind}_{i}" for i in range(n // 2) for kind in ("k", "v")]


def logit_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How far quantized logits are from the float ones, over the last axis (vocab), averaged over positions."""
    ref = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    got = got.reshape(-1, got.shape[-1]).astype(np.float64)
    cosine = np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    log_p, log_q = _log_softmax(ref), _log_softmax(got)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), -1)
    return {
        "max_abs_diff": float(np.abs(ref - got).max()),
        "cosine": float(cosine.mean()),
        "top1": float(np.mean(ref.argmax(-1) == got.argmax(-1))),
        "kl": float(kl.mean()),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_bound(metrics: dict[str, float], check: QuantCheck) -> float | None:
    """The file's KL bound (QuantCheck): `kl_over_simulated` times the KL of the recipe's rounding simulated on the
    PyTorch model (`simulated_kl`, none for a float recipe) plus `kl_slack`, capped by `max_kl`. The simulation
    measures what the recipe costs this model, so the bound means the same on every model: int4_block32 costs
    SmolLM2's real weights 0.010 and Llama-3.2-1B's random ones 0.066, their files 0.012 and 0.066; a small random
    model's int8 file with two layers' down_proj swapped measures 0.00058 against 0.000002 simulated. Good files
    measure 0.8-1.9x their simulation (docs/quantization.md): the default multiple is 3."""
    bounds = [check.max_kl]
    if check.kl_over_simulated is not None:
        bounds.append(round(check.kl_over_simulated * metrics.get("simulated_kl", 0.0) + check.kl_slack, 6))
    return min((b for b in bounds if b is not None), default=None)


def check_failures(metrics: dict[str, float], check: QuantCheck) -> list[str]:
    """One line per bound of `check` that `metrics` (from logit_metrics) violates; empty when all hold."""
    bounds = [
        ("max_abs_diff", check.max_abs_diff, lambda v, b: v <= b),
        ("cosine", check.min_cosine, lambda v, b: v >= b),
        ("kl", kl_bound(metrics, check), lambda v, b: v <= b),
        ("greedy", check.min_greedy, lambda v, b: v >= b),
        ("similarity_max_diff", check.max_similarity_diff, lambda v, b: v <= b),
    ]
    # A kind's check measures what its outputs have (an encoder has no vocabulary: no top-1, no KL); a bound on a
    # metric it does not measure does not apply to it. Where there are distributions (KL), the cosine of raw logits
    # and the top-1 agreement are reported, not bounded: both depend on the model, not only on the file (Gemma-2B's
    # good int8 file, KL 0.0030, has cosine 0.99638 under SmolLM2's 0.9966; Qwen2.5-0.5B's random weights give
    # near-flat distributions whose near-ties flip: top-1 0.84 at KL 0.00055), so a good file would fail on one
    # model and pass on another. KL against the recipe's simulation (kl_bound) means the same on every entry.
    return [
        f"{key} {metrics[key]:.6g} violates bound {bound}"
        for key, bound, ok in bounds
        if bound is not None
        and key in metrics
        and not ok(metrics[key], bound)
        and not (key == "cosine" and "kl" in metrics)
    ]


# --- encoder kinds: the same comparison through their signatures (encode + decode, embed) ---------------------------


def padded(ids: list[int], length: int) -> dict[str, np.ndarray]:
    """`tokens` and `attention_mask` [1, length] of one input padded with id 0 (masked)."""
    if len(ids) > length:
        raise ConfigError(f"check input of {len(ids)} tokens exceeds export.encoder_len={length}: raise it")
    pad = length - len(ids)
    return {
        "tokens": np.array([ids + [0] * pad], np.int32),
        "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int32),
    }


def _torch(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).long() for k, v in feed.items()}


@torch.no_grad()
def run_seq2seq_check(
    path: Path, model: nn.Module, golden: dict, cfg, rounds: dict[str, Rounding]
) -> tuple[dict[str, float], int]:
    """`encode` of the check prompt (padded, masked) vs our encoder; `decode` steps teacher-forced by the PyTorch
    model's greedy tokens, each side with its own caches, and the PyTorch steps again with the recipe's rounding
    (`rounds`, zoo/export/simulate.py) for the KL bound; then a free-running greedy generation through the
    flatbuffer alone against transformers' greedy tokens (`golden["reference_greedy"]`)."""
    from ai_edge_litert.interpreter import Interpreter

    from zoo.export.simulate import simulated

    interpreter = Interpreter(model_path=str(path), num_threads=cfg.threads)
    names = [f"cross_{kind}_{i}" for i in range(model.arch.num_layers) for kind in ("k", "v")]
    feed = padded(golden["check_prompt"], cfg.export.encoder_len)
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
        states = model.encode(**_torch(feed))
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
    reference_greedy, tokens, cache, token = golden["reference_greedy"], [], empty, start
    for pos in range(len(reference_greedy)):
        logits, cache = lite_step(token, pos, cache)
        token = int(logits.argmax())
        tokens.append(token)
    metrics["greedy"] = float(np.mean(np.array(tokens) == np.array(reference_greedy)))
    return metrics, steps


@torch.no_grad()
def run_encoder_check(path: Path, model: nn.Module, golden: dict, cfg) -> tuple[dict[str, float], int]:
    """`embed` of every golden input (padded, masked) vs our model, and the flatbuffer's cosine similarities
    between the inputs vs transformers' (`golden["similarities"]`)."""
    from ai_edge_litert.interpreter import Interpreter

    embed = Interpreter(model_path=str(path), num_threads=cfg.threads).get_signature_runner("embed")
    feeds = [padded(ids, cfg.export.encoder_len) for ids in golden["prompts"]]
    lite = np.concatenate([embed(**feed)["embedding"] for feed in feeds]).astype(np.float64)
    ref = np.concatenate([model(**_torch(feed)).numpy() for feed in feeds]).astype(np.float64)
    unit = lite / np.linalg.norm(lite, axis=-1, keepdims=True)
    cosine = np.sum(unit * ref, -1) / np.linalg.norm(ref, axis=-1)
    return {
        "max_abs_diff": float(np.abs(lite - ref).max()),
        "cosine": float(cosine.mean()),
        "similarity_max_diff": float(np.abs(unit @ unit.T - np.array(golden["similarities"])).max()),
    }, len(feeds)
