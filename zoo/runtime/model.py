"""An exported flatbuffer driven without the signature runner's copies: the `LiteModel` the generate loop steps.

The Python signature runner resizes, allocates and copies every KV input in and every output out on each call
(47 MB each way per SmolLM2 decode step at kv 1024). Here every tensor is allocated once and held as a numpy view
into the interpreter's own buffer. A step writes tokens / positions (/ mask) into the input views and invokes; the
updated cache lands in the output buffers, which differ from the cache inputs only in the slots the step wrote, so
only those slots are copied back (a few KB per decode step). Decode's cache inputs are the one true cache; a
prefill signature's cache inputs are brought up to date from them just before it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.config import KVLayout

MASK_VALUE = -1e9  # zoo.architectures.layers.MASK_VALUE, without importing torch into the runtime


class GenerateError(ValueError):
    """Bad input to the runtime (empty prompt, token out of range, unknown signature, context overflow): one line."""


@dataclass
class _Signature:
    name: str
    length: int  # T, tokens per call
    tokens: np.ndarray
    input_pos: np.ndarray
    mask: np.ndarray | None
    logits: np.ndarray | None
    cache_in: list[np.ndarray]  # K0, V0, K1, V1 ...
    cache_out: list[np.ndarray]
    subgraph: int
    offsets: np.ndarray | None  # [T, kv_max] slot - query index: slot s is visible to query i iff s - i <= start
    stale: list[int] = field(default_factory=list)  # [lo, hi) slots whose cache inputs lag decode's, or empty


class LiteModel:
    """One flatbuffer's `prefill_{T}` and `decode` signatures over one KV cache that lives in the interpreter.

    `prefill_lens` restricts which prefill signatures are used (default: all the file has).
    """

    def __init__(self, path: Path | str, kv_layout: KVLayout | str, threads: int = 2,
                 prefill_lens: list[int] | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self._wrapper = interpreter._interpreter  # pybind object: per-subgraph Invoke and zero-copy tensor views
        defs = interpreter._get_full_signature_list()
        have = ", ".join(sorted(defs))
        if "decode" not in defs:
            raise GenerateError(f"{self.path.name} has no 'decode' signature (has {have})")
        available = sorted(int(n.removeprefix("prefill_")) for n in defs if n.startswith("prefill_"))
        self.prefill_lens = available if prefill_lens is None else sorted(prefill_lens)
        for t in self.prefill_lens:
            if t not in available:
                raise GenerateError(f"prefill_{t} is not a signature of {self.path.name} (has {have})")
        names = [f"prefill_{t}" for t in self.prefill_lens] + ["decode"]
        subgraphs = {n: self._wrapper.GetSubgraphIndexFromSignature(n) for n in names}
        for sub in subgraphs.values():  # static shapes: allocated once, so the views below stay valid
            self._wrapper.AllocateTensors(sub)
        self.num_layers = sum(n.startswith("kv_cache_k_") for n in defs["decode"]["inputs"])
        self.cache_names = [f"kv_cache_{kind}_{i}" for i in range(self.num_layers) for kind in ("k", "v")]
        self._sigs = {n: self._signature(n, defs[n], subgraphs[n]) for n in names}
        decode = self._sigs["decode"]
        layout = KVLayout(kv_layout)
        # sequence axis per cache tensor: btnh K, V [1, S, G, H]; transposed K [1, G, S, H], V [1, G, H, S]
        axes = (1, 1) if layout is KVLayout.btnh else (2, 3)
        self._index = [(slice(None),) * axes[i % 2] for i in range(2 * self.num_layers)]
        self.kv_max = decode.cache_in[0].shape[axes[0]]
        self.vocab_size = decode.logits.shape[-1]
        for sig in self._sigs.values():  # fresh arena memory is not zeroed: an empty cache is
            for view in sig.cache_in:
                view[...] = 0

    def _signature(self, name: str, spec: dict, sub: int) -> _Signature:
        def view(index: int) -> np.ndarray:
            return self._wrapper.tensor(self._wrapper, index, sub)

        ins, outs = spec["inputs"], spec["outputs"]
        mask = view(ins["mask"]) if "mask" in ins else None
        offsets = None if mask is None else np.arange(mask.shape[-1])[None, :] - np.arange(mask.shape[-2])[:, None]
        return _Signature(
            name=name, length=1 if name == "decode" else int(name.removeprefix("prefill_")),
            tokens=view(ins["tokens"]), input_pos=view(ins["input_pos"]),
            mask=mask, offsets=offsets,
            logits=view(outs["logits"]) if "logits" in outs else None,
            cache_in=[view(ins[n]) for n in self.cache_names], cache_out=[view(outs[n]) for n in self.cache_names],
            subgraph=sub)

    def prefill_plan(self, start: int, count: int) -> list[tuple[str, int]]:
        """(signature, real tokens) chunks that write `count` tokens from position `start`.

        Full chunks of the largest prefill while they fill; the remainder goes to the smallest prefill that holds
        it, padded, when the padded slots stay inside the cache (they are masked until decode overwrites them),
        else to smaller full chunks and finally to decode steps.
        """
        plan, pos, left = [], start, count
        while left:
            fits = [t for t in self.prefill_lens if left <= t and pos + t <= self.kv_max]
            full = [t for t in self.prefill_lens if t <= left]
            if full and full[-1] == self.prefill_lens[-1]:
                sig, n = f"prefill_{full[-1]}", full[-1]
            elif fits:
                sig, n = f"prefill_{fits[0]}", left
            elif full:
                sig, n = f"prefill_{full[-1]}", full[-1]
            else:
                sig, n = "decode", 1
            plan.append((sig, n))
            pos, left = pos + n, left - n
        return plan

    def step(self, signature: str, tokens, start: int) -> np.ndarray | None:
        """Run one signature on `tokens` at positions start.. (padded to its length); the cache is updated in place.

        Returns a view of the logits output [1, T', V] (valid until the next step), or None when it has none.
        """
        sig = self._sigs[signature]
        n, t = len(tokens), sig.length
        if not 0 < n <= t or start + t > self.kv_max:
            raise GenerateError(f"{signature}: {n} tokens at position {start} do not fit (T={t}, "
                                f"kv_cache_max={self.kv_max})")
        if sig.stale:
            self._copy_slots(self._sigs["decode"].cache_in, sig.cache_in, *sig.stale)
            sig.stale = []
        sig.tokens[0, :n] = tokens
        sig.tokens[0, n:] = 0
        sig.input_pos[:] = range(start, start + t)
        if sig.mask is not None:
            sig.mask[0, 0] = np.where(sig.offsets <= start, np.float32(0), np.float32(MASK_VALUE))
        self._wrapper.Invoke(sig.subgraph)
        for other in self._sigs.values():
            if other is sig:
                continue
            if other.name == "decode":
                self._copy_slots(sig.cache_out, other.cache_in, start, start + t)
            else:
                other.stale = [min(other.stale[0], start), max(other.stale[1], start + t)] if other.stale \
                    else [start, start + t]
        self._copy_slots(sig.cache_out, sig.cache_in, start, start + t)
        return sig.logits

    def _copy_slots(self, src: list[np.ndarray], dst: list[np.ndarray], lo: int, hi: int) -> None:
        slots = slice(lo, hi)
        for head, a, b in zip(self._index, src, dst):
            index = head + (slots,)
            b[index] = a[index]

    def invoke_only(self, signature: str = "decode") -> None:
        """One bare invoke on whatever the inputs hold: the interpreter's own time, for overhead measurements."""
        self._wrapper.Invoke(self._sigs[signature].subgraph)
