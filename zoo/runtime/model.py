"""An exported flatbuffer run by LiteRT's `CompiledModel` with the KV cache updated in place: the `LiteModel` the
generate loop steps.

A step's cache writes are DYNAMIC_UPDATE_SLICEs, whose kernel copies its whole input into its output unless both
are the same memory (47 MB each way per SmolLM2 decode step at kv 1024, 12-15% of the step; the Python signature
runner adds its own copies of every input and output on top). `CompiledModel.run_by_name` takes caller-made tensor
buffers, so each `kv_cache_*` name is bound to ONE buffer as input and as output: the kernels write the new slots
straight into the cache and copy nothing. Every signature's caches have the same shapes, so the same buffers serve
`prefill_{T}` and `decode` alike: a prefill's slots are in place for the next decode, with no hand-over copies.
Only tokens, positions (and the mask) are written per step and only the logits are read back.

XNNPACK packs the weights for every signature it delegates; with a weight cache file the signatures share one
packed copy, mapped from that file (SmolLM2 int8: runtime peak RSS 634 -> 341 MiB). The file is written into a
temporary directory that is removed as soon as the model is loaded (the mapping stays): no cache outlives the
process or is ever read for another file's weights.
"""

from __future__ import annotations

import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.errors import InputError
from zoo.quiet import native_logs_captured
from zoo.schema import KVLayout

MASK_VALUE = -1e9  # zoo.architectures.layers.MASK_VALUE, without importing torch into the runtime


@dataclass
class _Signature:
    name: str
    length: int  # T, tokens per call
    inputs: dict  # name -> TensorBuffer; the kv_cache_* entries are the model's shared cache buffers
    outputs: dict
    mask_shape: tuple[int, ...] | None
    offsets: np.ndarray | None  # [T, kv_max] slot - query index: slot s is visible to query i iff s - i <= start
    logits_shape: tuple[int, ...] | None


@dataclass
class _Held:
    """What LiteRT owns for one model, released in one place (`LiteModel.close`, or at exit)."""

    model: object = None  # CompiledModel
    cache: dict = field(default_factory=dict)  # kv_cache_* name -> the one TensorBuffer every signature uses
    sigs: dict = field(default_factory=dict)  # signature name -> _Signature

    def release(self) -> None:
        with native_logs_captured():  # tearing down the environment logs every accelerator it destroys
            self.sigs, self.cache, self.model = {}, {}, None


def cache_layout(k_shape: tuple, v_shape: tuple) -> KVLayout | None:
    """The layout the cache shapes show (None when both read alike): btnh K and V are both [1, S, G, H];
    transposed K is [1, G, S, H] and V [1, G, H, S]."""
    if k_shape == v_shape:
        return KVLayout.btnh if k_shape[2] != k_shape[3] or k_shape[1] != k_shape[2] else None
    if (k_shape[2], k_shape[3]) == (v_shape[3], v_shape[2]):
        return KVLayout.transposed
    return None


class LiteModel:
    """One flatbuffer's `prefill_{T}` and `decode` signatures over one KV cache held in LiteRT tensor buffers.

    `prefill_lens` restricts which prefill signatures are used (default: all the file has).
    """

    def __init__(
        self, path: Path | str, kv_layout: KVLayout | str, threads: int = 2, prefill_lens: list[int] | None = None
    ):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        self.path = Path(path)
        held = self._held = _Held()
        self.close = weakref.finalize(self, held.release)  # `close()` releases now; else garbage collection or exit
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file: give the path of a .tflite written by zoo")
        with self.path.open("rb") as f:
            identifier = f.read(8)[4:8]  # the flatbuffer file identifier of every LiteRT model (not the whole file)
        if identifier != b"TFL3":
            raise InputError(
                f"{self.path}: not a LiteRT flatbuffer (no TFL3 identifier): give a .tflite written by zoo"
            )
        with native_logs_captured():
            with tempfile.TemporaryDirectory(prefix="zoo-xnnpack-") as tmp:
                cpu = CpuOptions(
                    num_threads=threads,  # 0 (LiteRT's default, "decide") is slower here
                    xnnpack_weight_cache_path=str(Path(tmp) / "weights.xnn"),
                )
                try:
                    held.model = CompiledModel.from_file(
                        str(self.path), options=Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=cpu)
                    )
                except RuntimeError as err:
                    raise InputError(
                        f"{self.path}: LiteRT cannot load it ({str(err).strip().splitlines()[0]}): the "
                        "file is truncated or corrupt; export it again"
                    ) from None
            self._load(KVLayout(kv_layout), prefill_lens)

    def _load(self, layout: KVLayout, prefill_lens: list[int] | None) -> None:
        defs = self._held.model.get_signature_list()
        have = ", ".join(sorted(defs))
        if "decode" not in defs:
            raise InputError(f"{self.path.name} has no 'decode' signature (has {have})")
        available = sorted(int(n.removeprefix("prefill_")) for n in defs if n.startswith("prefill_"))
        self.prefill_lens = available if prefill_lens is None else sorted(prefill_lens)
        for t in self.prefill_lens:
            if t not in available:
                raise InputError(f"prefill_{t} is not a signature of {self.path.name} (has {have})")
        decode_inputs = self._held.model.get_input_tensor_details("decode")
        self.num_layers = sum(n.startswith("kv_cache_k_") for n in decode_inputs)
        self.cache_names = [f"kv_cache_{kind}_{i}" for i in range(self.num_layers) for kind in ("k", "v")]
        self._cache_shapes = {n: tuple(decode_inputs[n]["shape"]) for n in self.cache_names}
        if self.num_layers == 0:
            raise InputError(
                f"{self.path.name}: its decode signature has no kv_cache_k_* inputs: not a decoder flatbuffer of zoo"
            )
        found = cache_layout(self._cache_shapes["kv_cache_k_0"], self._cache_shapes["kv_cache_v_0"])
        if found not in (None, layout):
            raise InputError(
                f"{self.path.name}: its KV caches are laid out {found.value}, not {layout.value}: "
                f"open it with kv_layout={found.value}"
            )
        self._held.cache = {n: self._held.model.create_input_buffer_by_name("decode", n) for n in self.cache_names}
        self.reset()
        # sequence axis of the cache: btnh K [1, S, G, H]; transposed K [1, G, S, H]
        self.kv_max = self._cache_shapes["kv_cache_k_0"][1 if layout is KVLayout.btnh else 2]
        names = [f"prefill_{t}" for t in self.prefill_lens] + ["decode"]
        self._held.sigs = {n: self._signature(n) for n in names}
        self.vocab_size = self._held.sigs["decode"].logits_shape[-1]

    def _signature(self, name: str) -> _Signature:
        ins, outs = self._held.model.get_input_tensor_details(name), self._held.model.get_output_tensor_details(name)
        for n in self.cache_names:
            for side, details in (("input", ins), ("output", outs)):
                if n not in details or tuple(details[n]["shape"]) != self._cache_shapes[n]:
                    raise InputError(
                        f"{self.path.name}: {name}'s {side} {n} is not decode's "
                        f"{list(self._cache_shapes[n])}: the signatures cannot share one cache"
                    )
        known = {"tokens", "input_pos", "mask", *self.cache_names}
        if unknown := sorted(set(ins) - known):
            raise InputError(f"{self.path.name}: {name} has inputs this runtime does not feed: {unknown}")
        mask_shape = tuple(ins["mask"]["shape"]) if "mask" in ins else None
        offsets = (
            None if mask_shape is None else np.arange(mask_shape[-1])[None, :] - np.arange(mask_shape[-2])[:, None]
        )
        return _Signature(
            name=name,
            length=ins["tokens"]["shape"][1],
            inputs={n: self._held.cache.get(n) or self._held.model.create_input_buffer_by_name(name, n) for n in ins},
            outputs={
                n: self._held.cache.get(n) or self._held.model.create_output_buffer_by_name(name, n) for n in outs
            },
            mask_shape=mask_shape,
            offsets=offsets,
            logits_shape=tuple(outs["logits"]["shape"]) if "logits" in outs else None,
        )

    def logits_positions(self, signature: str) -> int:
        """How many positions of a call `signature` returns logits for (T with prefill_logits all, 1, or 0)."""
        shape = self._held.sigs[signature].logits_shape
        return 0 if shape is None else shape[-2]

    def reset(self) -> None:
        """An empty cache (fresh buffers are not zeroed)."""
        for name, buffer in self._held.cache.items():
            buffer.write(np.zeros(self._cache_shapes[name], np.float32))

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

    def step(self, signature: str, tokens, start: int, logits: bool = True) -> np.ndarray | None:
        """Run one signature on `tokens` at positions start.. (padded to its length); the cache is updated in place.

        Returns the logits output [1, T', V] (a copy), or None when the signature has none or `logits` is False.
        """
        sig = self._held.sigs[signature]
        n, t = len(tokens), sig.length
        if not 0 < n <= t or start + t > self.kv_max:
            raise InputError(
                f"{signature}: {n} tokens at position {start} do not fit (T={t}, kv_cache_max={self.kv_max})"
            )
        padded = np.zeros((1, t), np.int32)
        padded[0, :n] = tokens
        sig.inputs["tokens"].write(padded)
        sig.inputs["input_pos"].write(np.arange(start, start + t, dtype=np.int32))
        if sig.mask_shape is not None:
            mask = np.where(sig.offsets <= start, np.float32(0), np.float32(MASK_VALUE))
            sig.inputs["mask"].write(mask.reshape(sig.mask_shape))
        self.invoke_only(signature)
        if not logits or sig.logits_shape is None:
            return None
        return sig.outputs["logits"].read(int(np.prod(sig.logits_shape)), np.float32).reshape(sig.logits_shape)

    def invoke_only(self, signature: str = "decode") -> None:
        """One run on whatever the inputs hold (caches aliased in place): the kernels' own time, and `step`'s core."""
        sig = self._held.sigs[signature]
        self._held.model.run_by_name(signature, sig.inputs, sig.outputs)
