"""The encoder's post-export check: the flatbuffer's `embed` against our PyTorch model on the gate's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.check import as_torch, padded
from zoo.kinds.encoder.gate import EncoderGate


@torch.no_grad()
def run_encoder_check(path: Path, model: nn.Module, gate: EncoderGate, cfg) -> tuple[dict[str, float], int]:
    """`embed` of every golden input (padded, masked) vs our model, and the flatbuffer's cosine similarities
    between the inputs vs transformers' (`gate.similarities`)."""
    from ai_edge_litert.interpreter import Interpreter

    embed = Interpreter(model_path=str(path), num_threads=cfg.threads).get_signature_runner("embed")
    feeds = [padded(ids, cfg.export.encoder_len) for ids in gate.inputs]
    lite = np.concatenate([embed(**feed)["embedding"] for feed in feeds]).astype(np.float64)
    ref = np.concatenate([model(**as_torch(feed)).numpy() for feed in feeds]).astype(np.float64)
    unit = lite / np.linalg.norm(lite, axis=-1, keepdims=True)
    cosine = np.sum(unit * ref, -1) / np.linalg.norm(ref, axis=-1)
    return {
        "max_abs_diff": float(np.abs(lite - ref).max()),
        "cosine": float(cosine.mean()),
        "similarity_max_diff": float(np.abs(unit @ unit.T - np.array(gate.similarities)).max()),
    }, len(feeds)
