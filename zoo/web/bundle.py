"""The `web` bundle: a folder that a browser runs on its own, served from 127.0.0.1 by `python -m zoo.web DIR`.

It holds the checked flatbuffer, the tokenizer (tokenizer.json + config + chat template, read in the page by
@huggingface/tokenizers), `zoo-web.json` (model, recipe, size, cache layout, start / stop ids, the chat template as
the (prefix, suffix) of one user turn), the page (`page/`) and LiteRT.js' module and wasm files copied from the
npm packages pinned in `zoo/web/package.json` (`npm ci --prefix zoo/web`, run by `setup.sh --with-web`). Nothing is
fetched from anywhere else.

LiteRT.js runs in a 32-bit WASM heap (at most 2 GiB) that holds the model bytes and XNNPACK's packed weights, one
packed copy per signature it delegates; a bundle whose estimate passes the heap is refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from zoo.checkpoint.tokenizer import prompt_affixes, save_tokenizer
from zoo.errors import BundleError
from zoo.files import temp_path
from zoo.runtime.tokenizer import special_ids
from zoo.schema import ZooConfig
from zoo.web.files import MANIFEST, NODE_MODULES, PAGE, TOKENIZER, VENDOR

HEAP_LIMIT = 2**31  # wasm32 LiteRT.js: 2 GiB
HEAP_RUNTIME = 128 * 2**20  # LiteRT.js' own code and allocations, XNNPACK's workspace, activations, logits


def heap_estimate(file_bytes: int, signatures: int, cache_bytes: int) -> int:
    """WASM heap bytes at run time: the model bytes, XNNPACK's packed copy of the weights per signature, the KV
    cache four times (a step's input and output caches and the allocator's slack as they alternate), LiteRT.js' own.

    Measured in Chromium after a generation (the heap only grows): SmolLM2 fp32 kv1024 1837 MiB (estimate 1849),
    int8_dynamic 666 MiB (702); after loading only 1644 / 474 MiB, which fixes the three file-sized copies.
    """
    return file_bytes * (1 + signatures) + 4 * cache_bytes + HEAP_RUNTIME


def cache_bytes(cfg: ZooConfig) -> int:
    att = cfg.model.arch.attention
    return 2 * cfg.model.arch.num_layers * cfg.export.kv_cache_max * att.num_kv_heads * att.head_dim * 4


def validate_heap(cfg: ZooConfig, tflite: Path) -> int:
    signatures, size = len(cfg.export.prefill_lens) + 1, tflite.stat().st_size
    estimate = heap_estimate(size, signatures, cache_bytes(cfg))
    if estimate > HEAP_LIMIT:
        raise BundleError(
            f"{tflite.name}: a web bundle would need ~{estimate / 2**30:.2f} GiB of WASM heap (the {size / 1e6:.0f} MB "
            f"file + {signatures} packed copies of its weights + KV caches), over LiteRT.js' 2 GiB: use a smaller "
            f"recipe (quant=int8_dynamic), fewer prefill signatures or a smaller export.kv_cache_max"
        )
    return estimate


def missing_vendor() -> list[str]:
    return [src for src in VENDOR.values() if not (NODE_MODULES / src).is_file()]


def manifest(cfg: ZooConfig, tflite: Path, tokenizer, heap: int) -> dict:
    start, stops = special_ids(tokenizer, cfg.model.tokenizer)
    chat = None
    if cfg.model.tokenizer.chat_template and getattr(tokenizer, "chat_template", None):
        user, model = prompt_affixes(tokenizer, "").values()
        chat = {"prefix": user[0], "suffix": user[1] + model[0]}
    return {
        "model": cfg.model.name,
        "quant": cfg.quant.name,
        "file": tflite.name,
        "size_bytes": tflite.stat().st_size,
        "kv_cache_max": cfg.export.kv_cache_max,
        "kv_layout": cfg.export.kv_layout.value,
        "prefill_lens": list(cfg.export.prefill_lens),
        "vocab_size": cfg.model.arch.vocab_size,
        "start_id": start,
        "stop_ids": stops,
        "chat": chat,
        "max_new_tokens": 64,
        "heap_estimate_bytes": heap,
    }


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def web(cfg: ZooConfig, tflite: Path, tokenizer, out: Path) -> Path:
    """`out/` (a folder) from the flatbuffer and the tokenizer, written via a temp folder and renamed."""
    if tokenizer is None:
        raise BundleError(f"{cfg.model.name}: a web bundle needs a tokenizer (model.tokenizer.source)")
    heap = validate_heap(cfg, tflite)
    if missing := missing_vendor():
        raise BundleError(
            f"LiteRT.js is not installed ({NODE_MODULES / missing[0]} is missing): run "
            f"`npm ci --prefix {NODE_MODULES.parent}` (./setup.sh --with-web does)"
        )
    tmp = temp_path(out)  # zoo/files.py's temp name: removed on failure, recognised as stale after a SIGKILL
    try:
        shutil.copytree(PAGE, tmp)
        for dst, src in VENDOR.items():
            link_or_copy(NODE_MODULES / src, tmp / dst)
        link_or_copy(tflite, tmp / tflite.name)
        save_tokenizer(tokenizer, tmp / TOKENIZER)
        (tmp / MANIFEST).write_text(json.dumps(manifest(cfg, tflite, tokenizer, heap), indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
