"""The stages of a run as plain functions of plain values, each returning its result (zoo/results.py), and `run`,
which calls them in order and writes report.json from what they return.

Nothing here reads Hydra's global state: tests compose a config and call the same functions.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn

from zoo import golden
from zoo.bundle import bundle
from zoo.checkpoint import Checkpoint, materialize, resolve, validate_checkpoint, weights_for
from zoo.checkpoint.tokenizer import load_tokenizer
from zoo.errors import CheckFailed, ConfigError, EvalFailed, GateFailed, ResourceError
from zoo.eval import run_eval
from zoo.eval.auto import choose
from zoo.exact import float64
from zoo.files import digest
from zoo.golden import GateResult
from zoo.jobcache import JobCache
from zoo.kinds import ModelKind, kind_of
from zoo.progress import stage_bar
from zoo.quiet import native_logs_captured
from zoo.report import Report, unfinished
from zoo.resources import large_blocks_mapped, timed
from zoo.results import Benched, Checked, Debugged, Exported, Gate, Loaded, Resolved
from zoo.schema import Variant, ZooConfig
from zoo.stream import is_streamed, streamed

# Peak memory of a run. A model held in memory: the libraries (torch, TensorFlow, LiteRT) plus a multiple of its
# float32 weights (measured: SmolLM2 1.9-2.2 GiB for 0.54 GB of weights, TinyLlama 6.7 GiB for 4.4 GB; this
# estimate, 2.2 and 8.8 GiB, errs on the safe side). A streamed one: the libraries plus the larger of the gate's
# working set (one layer in float64 with its transients, the embedding table in float32) and the export's (the
# output file, as the quantizer holds it, plus a margin).
LIBRARIES_GIB, WEIGHTS_FACTOR, EXPORT_MARGIN_GIB = 1.2, 1.7, 1.5
BYTES_PER_WEIGHT = {"none": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.6}


def memory_estimate(cfg: ZooConfig, kind: ModelKind, model: nn.Module) -> tuple[float, str]:
    """GiB a run of `cfg` needs at its peak, and how it runs (`in memory` or `streamed`); `model` on meta."""
    params = sum(p.numel() for p in model.parameters())
    f32 = 4 * params / 2**30
    if not kind.streams or f32 <= cfg.resident_gib:
        return LIBRARIES_GIB + WEIGHTS_FACTOR * f32, "in memory"
    layer = max(sum(p.numel() for p in block.parameters()) for block in model.model.layers)
    table = model.model.embed_tokens.weight.numel()
    gate = (2 * 8 * layer + 4 * table) / 2**30
    mode = cfg.quant.mode.value
    per_weight = next((v for k, v in BYTES_PER_WEIGHT.items() if mode.startswith(k)), 4.0)
    export = per_weight * params / 2**30 + EXPORT_MARGIN_GIB if cfg.export.enabled else 0.0
    return LIBRARIES_GIB + max(gate, export), "streamed"


def preflight(cfg: ZooConfig) -> None:
    """What can be refused before any file is read or written: the quant recipe against the entry's weight names,
    and a model too large for the memory (the model built on the meta device: nothing allocated)."""
    from zoo.export.recipe import validate_recipe

    kind = kind_of(cfg)
    with torch.device("meta"):
        model = kind.build(cfg.model.arch, cfg.export)
    validate_recipe(cfg.quant, kind.components, model, cfg.model.name)
    need, how = memory_estimate(cfg, kind, model)
    params = sum(p.numel() for p in model.parameters())
    limit = cfg.memory_limit_gib if cfg.memory_limit_gib is not None else psutil.virtual_memory().available / 2**30
    if need > limit:
        source = "memory_limit_gib" if cfg.memory_limit_gib is not None else "available memory"
        raise ResourceError(
            f"{cfg.model.name} needs ~{need:.1f} GiB ({params / 1e9:.2f} B parameters, {how}, quant "
            f"{cfg.quant.name}) but the {source} is {limit:.1f} GiB: free memory, use a larger machine, or try "
            "variant=small"
        )


def resolve_checkpoint(cfg: ZooConfig, cache: JobCache | None = None) -> Resolved:
    """The entry's checkpoint, checked against the architecture the entry states (reused from `cache` if there)."""

    def make() -> Checkpoint:
        from zoo.files import cache_root

        checkpoint = resolve(cfg.model.checkpoint, cfg.model.reference, cfg.seed, cache_root(cfg.cache_dir))
        validate_checkpoint(cfg.model.reference, checkpoint)
        return checkpoint

    with timed("checkpoint") as clock:
        checkpoint = cache.checkpoint(cfg, make) if cache else make()
    return Resolved(checkpoint, clock.timing)


def load_model(cfg: ZooConfig, kind: ModelKind, checkpoint: Checkpoint) -> Loaded:
    """Build our module from the entry and map it strictly onto the checkpoint (nothing read yet); read it into
    memory when it is at most `resident_gib` of float32 or its kind cannot stream (zoo/stream.py)."""
    tokenizer = load_tokenizer(cfg.model.tokenizer, checkpoint)
    if tokenizer is not None and len(tokenizer) > cfg.model.arch.vocab_size:
        raise ConfigError(
            f"model.tokenizer: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
            f"{cfg.model.arch.vocab_size} (model.arch.vocab_size): give the entry's own tokenizer"
        )
    with timed("build") as building, torch.device("meta"):  # no init of weights the checkpoint replaces
        model = kind.build(cfg.model.arch, cfg.export)
    with timed("load") as loading:
        weights = weights_for(model, checkpoint.tensors, cfg.model.mapping, cfg.model.arch.num_layers)
        if not kind.streams or weights.nbytes() <= cfg.resident_gib * 2**30:
            materialize(model, weights)
    return Loaded(kind, cfg.model.name, model, checkpoint, tokenizer, weights, building.timing, loading.timing)


def whole(loaded: Loaded) -> nn.Module:
    """Our model with every weight in memory (read now if it was streamed): for the stages that run it as one
    module (bench's PyTorch speeds, the divergence finder), at the memory they then need."""
    return materialize(loaded.model, loaded.weights) if is_streamed(loaded.model) else loaded.model


def verify(cfg: ZooConfig, loaded: Loaded, cache: JobCache | None = None) -> Gate:
    """The golden gate against the entry's transformers class (its verdict reused from `cache` when the same
    weights were gated with the same inputs); a miss is the result's `failure`."""
    with timed("golden") as clock:
        result = cache.gate(cfg, lambda: gate_result(cfg, loaded)) if cache else gate_result(cfg, loaded)
    return Gate(result, None if result.passed else result.line(), clock.timing)


def gate_result(cfg: ZooConfig, loaded: Loaded) -> GateResult:
    """The kind's gate (zoo/kinds/<kind>/gate.py) on its golden inputs, in float64, the transformers reference
    streamed a layer at a time when ours is."""
    kind = loaded.kind
    resident = not is_streamed(loaded.model)
    hf = golden.reference_model(cfg.model.reference, loaded.checkpoint, resident)
    reading = (
        nullcontext()
        if resident
        else streamed(hf, golden.reference_source(hf, loaded.checkpoint, cfg.model.reference.hf_class))
    )
    inputs = kind.golden_inputs(cfg, loaded.tokenizer)
    with float64(loaded.model, hf), reading:  # zoo/exact.py: no float32 rounding for a kernel's choice to flip
        return kind.gate(loaded.model, loaded.weights, hf, inputs, cfg, loaded.tokenizer)


def check_line(section: dict) -> str:
    """The check's summary line: the decoder's logit metrics, or whatever metrics an encoder kind measures."""
    if "kl" not in section:
        metrics = ", ".join(
            f"{k} {section[k]:.3g}" for k in ("max_abs_diff", "cosine", "greedy", "similarity_max_diff") if k in section
        )
        return f"check {'PASS' if section['passed'] else 'FAIL'} over {section['positions']} steps or inputs: {metrics}"
    greedy = f", flatbuffer greedy vs transformers {section['greedy']:.3f}" if "greedy" in section else ""
    simulated = f" (recipe simulated in PyTorch: {section['simulated_kl']:.2e})" if "simulated_kl" in section else ""
    return (
        f"check PASS over {section['positions']} positions: max |logit diff| {section['max_abs_diff']:.2e}, cosine "
        f"{section['cosine']:.5f}, top-1 {section['top1']:.3f}, KL {section['kl']:.2e}{simulated}{greedy}"
    )


def artifact_path(cfg: ZooConfig, run_dir: Path) -> Path:
    return run_dir / f"{cfg.model.name}_{cfg.quant.name}_kv{cfg.export.kv_cache_max}.tflite"


def output_path(cfg: ZooConfig, run_dir: Path) -> Path:
    """The run's flatbuffer: `export.output` (its folder made) or the run folder's artifact_path."""
    if cfg.export.output is None:
        return artifact_path(cfg, run_dir)
    path = Path(cfg.export.output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export(cfg: ZooConfig, loaded: Loaded, path: Path) -> Exported:
    """The multi-signature flatbuffer of the verified model (its kind's signatures), quantized by the recipe,
    written atomically; a streamed model's weights read one at a time as they are written."""
    with timed("export") as clock, large_blocks_mapped():
        weights = loaded.weights.arrays() if is_streamed(loaded.model) else None
        signatures = loaded.kind.export(loaded.model, path, cfg, weights)
    record = digest(path)
    return Exported(path, record["size_bytes"], record["sha256"], signatures, clock.timing)


def cached_export(cfg: ZooConfig, loaded: Loaded) -> Path:
    """The flatbuffer of `cfg` from the export cache (zoo/cache.py), or exported into it now, without gate or check
    (quant=auto's candidates, all of the verified model); its report.json, written last, says `ok`."""
    from zoo.artifacts import artifact_dir

    folder = artifact_dir(cfg)
    path = artifact_path(cfg, folder)
    if unfinished(folder) is not None:
        report = Report(folder / "report.json", cfg)
        report.add(export(cfg, loaded, path))
        report.finish(None)
    return path


def check(cfg: ZooConfig, loaded: Loaded, gate: GateResult, path: Path) -> Checked:
    """The flatbuffer against the PyTorch model on the same inputs (what its kind compares, from its gate's
    result: the inputs, reference values); past the recipe's bounds is the result's `failure`."""
    from zoo.check import check_failures, kl_bound

    with timed("check") as clock, float64(loaded.model):
        metrics, positions = loaded.kind.check(path, loaded.model, loaded.weights, gate, cfg)
    failures = check_failures(metrics, cfg.quant.check)
    bounds = {k: v for k, v in vars(cfg.quant.check).items() if v is not None}
    if "kl" in metrics:
        bounds["kl"] = kl_bound(metrics, cfg.quant.check)  # the one applied
    failure = f"post-export check of {path.name} ({cfg.quant.name}) failed: " + "; ".join(failures)
    return Checked(metrics, positions, bounds, failures, failure if failures else None, clock.timing)


def debug(cfg: ZooConfig, loaded: Loaded, gate: GateResult, path: Path, run_dir: Path) -> Debugged:
    """The divergence finder (zoo/debug/) on the flatbuffer at `path`: its table printed, debug.json written in
    `run_dir`, and report.json's `debug` section (first node past the bounds, the node adding most error)."""
    from zoo.debug.run import run_finder

    with timed("debug") as clock:
        section = run_finder(cfg, loaded.kind, whole(loaded), list(gate.inputs), path, run_dir)
    return Debugged(section, clock.timing)


def bench(cfg: ZooConfig, loaded: Loaded, exported: Exported) -> Benched:
    """Speeds, runtime memory and the bandwidth bound of the flatbuffer (zoo/bench.py); figures vs the targets."""
    from zoo.bench import run_bench, target_records

    with timed("bench") as clock:
        section = run_bench(
            cfg,
            loaded.kind,
            whole(loaded),
            lambda: golden.reference_model(cfg.model.reference, loaded.checkpoint),
            exported.path,
            exported.size_bytes,
        )
    target = next((t for t in cfg.bench.targets if (t.model, t.quant) == (cfg.model.name, cfg.quant.name)), None)
    targets = None
    if target is not None and cfg.variant is Variant.full:  # the targets are the real model's
        targets = target_records(exported.sections()["export"], section, target)
    return Benched(section, targets, clock.timing)


def seed_everything(seed: int) -> None:
    """Every job starts from the same random state, whatever ran before it in the process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: ZooConfig, run_dir: Path, cache: JobCache | None = None, debug_anyway: bool = False) -> Report:
    """One job: load, verify, export, check, eval, bench; report.json is written from the stages' results even
    when a stage fails (with the sections of those before it, and the figures of a missed bound).

    `cache` (zoo/jobcache.py) lets jobs of a sweep in one process share the checkpoint and the gate's verdict.
    `debug_anyway` (zoo.debug): the divergence finder runs after the check whatever its verdict, a failed check is
    recorded rather than raised, and the job stops there.
    """
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    stages = 4 + 2 * cfg.export.enabled + cfg.export.enabled * (cfg.bench.enabled + cfg.eval.enabled)
    report = Report(run_dir / "report.json", cfg)
    hits = dict(cache.hits) if cache else {}
    error = None
    try:
        with stage_bar(stages, f"zoo {cfg.model.name}"):
            kind = kind_of(cfg)  # the one lookup: every stage after load_model asks `loaded.kind`
            loaded = report.add(load_model(cfg, kind, report.add(resolve_checkpoint(cfg, cache)).checkpoint))
            gate = report.add(verify(cfg, loaded, cache))
            if gate.failure:
                raise GateFailed(gate.failure)
            if cfg.quant.candidates and cfg.export.enabled:  # quant=auto: the job goes on with the chosen recipe
                chosen = report.add(choose(cfg, loaded, run_dir, lambda c: cached_export(c, loaded)))
                if chosen.failure:
                    raise ConfigError(chosen.failure)
                cfg = chosen.cfg
            if cfg.export.enabled:
                with native_logs_captured():  # TensorFlow's and LiteRT's C++ logs (zoo/quiet.py)
                    exported = report.add(export(cfg, loaded, output_path(cfg, run_dir)))
                    checked = report.add(check(cfg, loaded, gate.result, exported.path))
                    if debug_anyway or (checked.failure and cfg.debug.on_fail):
                        report.add(debug(cfg, loaded, gate.result, exported.path, run_dir))
                    if debug_anyway:
                        return report
                    if checked.failure:
                        raise CheckFailed(checked.failure)
                    if cfg.eval.enabled:
                        evaluated = report.add(
                            run_eval(cfg, loaded.kind, exported.path, loaded.checkpoint, loaded.tokenizer)
                        )
                        if evaluated.failure:
                            raise EvalFailed(evaluated.failure)
                    if cfg.export.bundles:
                        report.add(bundle(cfg, exported.path, loaded.tokenizer))
                if cfg.bench.enabled:
                    report.add(bench(cfg, loaded, exported))
    except BaseException as err:
        error = err
        raise
    finally:
        reused = [kind for kind, n in cache.hits.items() if n > hits[kind]] if cache else None
        report.finish(error, reused)
    return report
