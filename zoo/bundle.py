"""Bundles for the ecosystem's runtimes, made from a checked flatbuffer and the entry's tokenizer.

`.litertlm` (LiteRT-LM) with `litert-lm-builder`: the PREFILL_DECODE flatbuffer, the HF tokenizer.json, and an
LlmMetadata proto holding the start / stop tokens, the chat template (jinja) and the context length (kv_cache_max).
LiteRT-LM needs the transposed KV layout and the mask as an input (`export=litertlm`).

`.task` (MediaPipe LLM Inference) with MediaPipe's own bundler (`mediapipe==0.10.35`, the last release that ships
it): only for tokenizers with a SentencePiece model, which is all that bundler accepts.

`web/` (zoo/web/): a folder with the flatbuffer, the tokenizer, a page and LiteRT.js, served by `python -m zoo.web`.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.checkpoint.tokenizer import prompt_affixes, save_tokenizer
from zoo.errors import BundleError
from zoo.files import digest, scratch
from zoo.resources import timed
from zoo.results import Bundled
from zoo.runtime.tokenizer import special_ids
from zoo.schema import Bundle, ZooConfig


def llm_metadata(cfg: ZooConfig, tokenizer):
    """LiteRT-LM's LlmMetadata: start / stop token ids, context length, greedy sampling, the chat template."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    start, stops = special_ids(tokenizer, cfg.model.tokenizer)
    meta = llm_metadata_pb2.LlmMetadata()
    if start is not None:
        meta.start_token.token_ids.ids.append(start)
    for stop in stops:
        meta.stop_tokens.add().token_ids.ids.append(stop)
    meta.max_num_tokens = cfg.export.kv_cache_max
    # greedy by default, as zoo.generate: LiteRT-LM 0.18's CPU sampler implements only TOP_P; with k=1 it is greedy
    sampler = meta.sampler_params
    sampler.type, sampler.k, sampler.p, sampler.temperature = sampler.TOP_P, 1, 1.0, 1.0
    meta.llm_model_type.generic_model.SetInParent()
    if cfg.model.tokenizer.chat_template and getattr(tokenizer, "chat_template", None):
        affixes = prompt_affixes(tokenizer, tokenizer.convert_ids_to_tokens(start) if start is not None else "")
        for role, (prefix, suffix) in affixes.items():
            getattr(meta.prompt_templates, role).prefix = prefix
            getattr(meta.prompt_templates, role).suffix = suffix
    return meta


def litertlm(cfg: ZooConfig, tflite: Path, tokenizer, out: Path) -> Path:
    """`out` (.litertlm) from the flatbuffer and the tokenizer, written atomically."""
    from litert_lm_builder import litertlm_builder as lb

    if tokenizer is None:
        raise BundleError(f"{cfg.model.name}: a .litertlm bundle needs a tokenizer (model.tokenizer.source)")
    with scratch(out) as work:
        tok_dir = save_tokenizer(tokenizer, work / "tokenizer")
        meta_path = work / "llm_metadata.pb"
        meta_path.write_bytes(llm_metadata(cfg, tokenizer).SerializeToString())
        builder = lb.LitertLmFileBuilder()
        builder.add_system_metadata(lb.Metadata(key="model", value=cfg.model.name, dtype=lb.DType.STRING))
        builder.add_system_metadata(lb.Metadata(key="quant", value=cfg.quant.name, dtype=lb.DType.STRING))
        builder.add_tflite_model(str(tflite), lb.TfLiteModelType.PREFILL_DECODE)
        builder.add_hf_tokenizer(str(tok_dir / "tokenizer.json"))
        builder.add_llm_metadata(str(meta_path))
        with open(work / out.name, "wb") as f:
            builder.build(f)
        os.replace(work / out.name, out)
    return out


def task(cfg: ZooConfig, tflite: Path, tokenizer, out: Path) -> Path:
    """`out` (.task) by MediaPipe's own bundler: the flatbuffer, the SentencePiece model, start/stop tokens, affixes.

    The bundler accepts only a SentencePiece model: the `tokenizer.model` in the tokenizer's folder.
    """
    sp_model = Path(getattr(tokenizer, "name_or_path", "") or "") / "tokenizer.model"
    if tokenizer is None or not sp_model.is_file():
        raise BundleError(
            f"{cfg.model.name}: a .task bundle needs a SentencePiece tokenizer.model (MediaPipe's "
            f"bundler accepts no other); this tokenizer is {type(tokenizer).__name__} without one"
        )
    from mediapipe.tasks.python.genai import bundler

    start, stops = special_ids(tokenizer, cfg.model.tokenizer)
    affixes = {"user": (None, None), "model": (None, None)}
    if cfg.model.tokenizer.chat_template and getattr(tokenizer, "chat_template", None):
        affixes = prompt_affixes(tokenizer, tokenizer.convert_ids_to_tokens(start) if start is not None else "")
    with scratch(out) as work:  # the bundler wants its output named *.task
        bundler.create_bundle(
            bundler.BundleConfig(
                tflite_model=str(tflite),
                tokenizer_model=str(sp_model),
                start_token=tokenizer.convert_ids_to_tokens(start),
                stop_tokens=tokenizer.convert_ids_to_tokens(stops),
                output_filename=str(work / out.name),
                prompt_prefix_user=affixes["user"][0],
                prompt_suffix_user=affixes["user"][1],
                prompt_prefix_model=affixes["model"][0],
                prompt_suffix_model=affixes["model"][1],
            )
        )
        os.replace(work / out.name, out)
    return out


def web(cfg: ZooConfig, tflite: Path, tokenizer, out: Path) -> Path:
    """`out/`, a folder the browser runs (zoo/web/bundle.py): `python -m zoo.web out/` serves it."""
    from zoo.web.bundle import web as make

    return make(cfg, tflite, tokenizer, out)


# kind -> (maker, output: a suffix replacing the flatbuffer's, or a folder name next to it)
MAKERS = {Bundle.litertlm: (litertlm, ".litertlm"), Bundle.task: (task, ".task"), Bundle.web: (web, "web")}


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def bundle(cfg: ZooConfig, tflite: Path, tokenizer) -> Bundled:
    """The pipeline's bundle stage: each of `export.bundles` next to the checked flatbuffer."""
    paths = {}
    with timed("bundle") as clock:
        for kind in cfg.export.bundles:
            make, out = MAKERS[kind]
            paths[kind.value] = make(
                cfg, tflite, tokenizer, tflite.with_suffix(out) if out.startswith(".") else tflite.parent / out
            )
    # a file's record carries its hash (zoo/files.py); the web bundle is a folder: its size
    records = {
        k: {"path": str(p), **(digest(p) if p.is_file() else {"size_bytes": size_bytes(p)})} for k, p in paths.items()
    }
    return Bundled(records, clock.timing)
