"""Bundles for the ecosystem's runtimes, made from a checked flatbuffer and the entry's tokenizer.

`.litertlm` (LiteRT-LM) with `litert-lm-builder`: the PREFILL_DECODE flatbuffer, the HF tokenizer.json, and an
LlmMetadata proto holding the start / stop tokens, the chat template (jinja) and the context length (kv_cache_max).
LiteRT-LM needs the transposed KV layout and the mask as an input (`export=litertlm`).

`.task` (MediaPipe LLM Inference) with MediaPipe's own bundler (`mediapipe==0.10.35`, the last release that ships
it): only for tokenizers with a SentencePiece model, which is all that bundler accepts.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from zoo.config import KVLayout, ZooConfig
from zoo.runtime.tokenizer import special_ids


class BundleError(ValueError):
    """A bundle that cannot be made from this export or tokenizer: one line saying why."""


def save_tokenizer(tokenizer, folder: Path) -> Path:
    """The tokenizer's files (tokenizer.json, its config and chat template) in `folder`, written via a temp folder."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def llm_metadata(cfg: ZooConfig, tokenizer):
    """LiteRT-LM's LlmMetadata: start / stop token ids, context length, the chat template as jinja."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    start, stops = special_ids(tokenizer, cfg.model.tokenizer)
    meta = llm_metadata_pb2.LlmMetadata()
    if start is not None:
        meta.start_token.token_ids.ids.append(start)
    for stop in stops:
        meta.stop_tokens.add().token_ids.ids.append(stop)
    meta.max_num_tokens = cfg.export.kv_cache_max
    meta.llm_model_type.generic_model.SetInParent()
    if cfg.model.tokenizer.chat_template and getattr(tokenizer, "chat_template", None):
        meta.jinja_prompt_template = tokenizer.chat_template
    return meta


def litertlm(cfg: ZooConfig, tflite: Path, tokenizer, out: Path) -> Path:
    """`out` (.litertlm) from the flatbuffer and the tokenizer, written atomically."""
    from litert_lm_builder import litertlm_builder as lb

    if tokenizer is None:
        raise BundleError(f"{cfg.model.name}: a .litertlm bundle needs a tokenizer (model.tokenizer.source)")
    if cfg.export.kv_layout is not KVLayout.transposed or not cfg.export.mask_as_input:
        raise BundleError("a .litertlm bundle needs export.kv_layout=transposed and export.mask_as_input=true "
                          "(export=litertlm)")
    work = out.with_name(f".{out.name}.parts")
    shutil.rmtree(work, ignore_errors=True)
    try:
        tok_dir = save_tokenizer(tokenizer, work / "tokenizer")
        meta_path = work / "llm_metadata.pb"
        meta_path.write_bytes(llm_metadata(cfg, tokenizer).SerializeToString())
        builder = lb.LitertLmFileBuilder()
        builder.add_system_metadata(lb.Metadata(key="model", value=cfg.model.name, dtype=lb.DType.STRING))
        builder.add_system_metadata(lb.Metadata(key="quant", value=cfg.quant.name, dtype=lb.DType.STRING))
        builder.add_tflite_model(str(tflite), lb.TfLiteModelType.PREFILL_DECODE)
        builder.add_hf_tokenizer(str(tok_dir / "tokenizer.json"))
        builder.add_llm_metadata(str(meta_path))
        tmp = work / out.name
        with open(tmp, "wb") as f:
            builder.build(f)
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
