"""Building blocks of the generic builders: norms, RoPE, attention over an explicit KV cache, MLPs.

Everything is written for `torch.export`: shapes are static, positions and masks are tensors, and no Python
branch depends on a tensor's value. The one data-dependent size is `filled_slots`: attention reads only the cache
slots written so far (rounded up), not all kv_cache_max of them. Module names follow HF's where that keeps the
checkpoint mapping short.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.schema import (
    Activation,
    ArchConfig,
    KVLayout,
    LayerType,
    MLPType,
    NormConfig,
    NormType,
    RopeScaling,
    layer_type,
    rotary_dim,
)
from zoo.schema import head_dim as arch_head_dim

# Large finite negative for masked scores: -inf tables crash the TFLite converter under int8 quantization.
MASK_VALUE = -1e9


class Norm(nn.Module):
    """RMSNorm or LayerNorm over the last dim, optionally with a zero-centred gamma applied as (1 + w)."""

    def __init__(self, dim: int, cfg: NormConfig):
        super().__init__()
        self.norm_type, self.eps, self.zero_centered = NormType(cfg.type), cfg.eps, cfg.zero_centered
        self.weight = nn.Parameter(torch.zeros(dim) if cfg.zero_centered else torch.ones(dim))
        has_bias = self.norm_type is NormType.layer and cfg.bias
        self.bias = nn.Parameter(torch.zeros(dim)) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = 1.0 + self.weight if self.zero_centered else self.weight
        if self.norm_type is NormType.layer:
            return F.layer_norm(x, x.shape[-1:], gamma, self.bias, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * gamma


def rope_inv_freq(arch: ArchConfig, theta: float, factors: list[float] | None = None) -> torch.Tensor:
    """Inverse frequencies of the rotated dims, with linear, llama3 or longrope (`factors`) scaling as transformers
    computes them."""
    dim, rope = rotary_dim(arch), arch.rope
    # Explicitly on the CPU: the pipeline builds modules on the meta device, and this buffer is not in checkpoints.
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    scaling = RopeScaling(rope.scaling)
    if scaling is RopeScaling.longrope:
        return 1.0 / (torch.tensor(factors, dtype=torch.float32, device="cpu") * theta**exponent)
    inv_freq = 1.0 / (theta**exponent)
    if scaling is RopeScaling.linear:
        return inv_freq / rope.factor
    if scaling is RopeScaling.llama3:
        low_wavelen = rope.original_max_positions / rope.low_freq_factor
        high_wavelen = rope.original_max_positions / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = (rope.original_max_positions / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


class Rope(nn.Module):
    """Rotary embedding in HF's rotate-half convention; cos/sin computed from the positions as transformers does.

    No position table: nothing sized by max_positions, nothing for int8 quantization to mangle. longrope keeps both
    frequency sets and, like transformers, rotates a whole forward with the long ones when its largest (last)
    position is past the pretraining context; cos/sin carry its attention factor.
    """

    def __init__(self, arch: ArchConfig, theta: float):
        super().__init__()
        rope = arch.rope
        longrope = RopeScaling(rope.scaling) is RopeScaling.longrope
        self.register_buffer("inv_freq", rope_inv_freq(arch, theta, rope.short_factor), persistent=False)
        long = rope_inv_freq(arch, theta, rope.long_factor) if longrope else None
        self.register_buffer("long_inv_freq", long, persistent=False)
        self.original_max = rope.original_max_positions
        factor = arch.max_positions / rope.original_max_positions
        grown = longrope and factor > 1
        self.attention_factor = (
            math.sqrt(1 + math.log(factor) / math.log(rope.original_max_positions)) if grown else None
        )

    def forward(self, input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, T, 1, rotary_dim] for positions [T] (increasing)."""
        inv_freq = self.inv_freq
        if self.long_inv_freq is not None:
            last = input_pos[input_pos.shape[0] - 1]  # a static non-negative index: TFLite GATHER rejects -1
            inv_freq = torch.where(last >= self.original_max, self.long_inv_freq, inv_freq)
        freqs = input_pos.float()[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)[None, :, None, :]
        cos, sin = emb.cos(), emb.sin()
        if self.attention_factor is not None:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, head_dim]; only the first rotary_dim dims rotate (partial rotary keeps the rest)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    rotated = torch.cat([-x_rot[..., rot // 2 :], x_rot[..., : rot // 2]], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


@torch.library.custom_op("zoo::filled_slots", mutates_args=())
def filled_slots(input_pos: torch.Tensor, kv_max: int, multiple: int) -> torch.Tensor:
    """Slot indices [0, n) that attention reads: n is the last position + 1 rounded up to `multiple`, at most kv_max.

    Its length is data-dependent, so the exported graph slices each cache to n slots at run time (zoo/export/lower.py
    lowers this op to RANGE over that n): a decode step at position 40 of a 1024-slot cache packs and multiplies 64
    slots, not 1024. The rounding keeps the shapes, and the runtime's re-planning for them, constant for `multiple`
    steps at a time.
    """
    n = min(-(-(int(input_pos.max()) + 1) // multiple) * multiple, kv_max)
    return torch.arange(n, dtype=input_pos.dtype)


@filled_slots.register_fake
def _(input_pos: torch.Tensor, kv_max: int, multiple: int) -> torch.Tensor:
    return input_pos.new_empty(torch.library.get_ctx().new_dynamic_size(min=1, max=kv_max))


def cache_slots(input_pos: torch.Tensor, kv_max: int, multiple: int) -> torch.Tensor:
    """The slots attention reads: the filled ones (`filled_slots`), or all kv_max when multiple is 0 (static shapes)."""
    if multiple == 0:
        return torch.arange(kv_max, dtype=input_pos.dtype)
    return filled_slots(input_pos, kv_max, multiple)


def attention_mask(input_pos: torch.Tensor, slots: torch.Tensor, window: int | None) -> torch.Tensor:
    """Additive mask [1, 1, T, S] over `slots` [S]: slot s is visible to query t iff pos[t] - window < s <= pos[t]."""
    slots = slots[None, :]
    pos = input_pos[:, None]
    visible = slots <= pos
    if window is not None:
        visible = visible & (slots > pos - window)
    zero = torch.zeros((), dtype=torch.float32)
    return torch.where(visible, zero, torch.full((), MASK_VALUE))[None, None]


class Attention(nn.Module):
    """Multi-head attention with GQA/MQA over a fixed-size KV cache passed in and returned (functional cache).

    `rope` is the (cos, sin) pair of this layer's type, computed once per forward by the decoder.
    """

    def __init__(self, arch: ArchConfig, layer: int):
        super().__init__()
        att = arch.attention
        self.num_heads, self.num_kv_heads, self.head_dim = att.num_heads, att.num_kv_heads, arch_head_dim(arch)
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(arch.dim, self.q_size + 2 * self.kv_size, bias=att.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, arch.dim, bias=att.out_bias)
        self.q_norm = Norm(self.head_dim, arch.norm) if att.qk_norm else None
        self.k_norm = Norm(self.head_dim, arch.norm) if att.qk_norm else None
        self.window = att.sliding_window if layer_type(arch, layer) is LayerType.sliding else None
        self.scale = (att.query_pre_attn_scalar or self.head_dim) ** -0.5
        self.softcap = att.logit_softcap

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        layout: KVLayout,
        slots: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`slots` [S] (from `cache_slots`) are the cache slots read; `mask` [1, 1, T, kv_max] overrides the causal
        one."""
        b, t, _ = x.shape
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(b, t, self.num_heads, self.head_dim)
        k = k.view(b, t, self.num_kv_heads, self.head_dim)
        v = v.view(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)

        n = slots.shape[0]
        if layout is KVLayout.btnh:  # K, V [B, kv_max, G, H]
            k_cache = k_cache.index_copy(1, input_pos, k)
            v_cache = v_cache.index_copy(1, input_pos, v)
            keys_t = k_cache[:, :n].permute(0, 2, 3, 1)  # [B, G, H, S]
            values = v_cache[:, :n].transpose(1, 2)  # [B, G, S, H]
        else:  # K [B, G, kv_max, H], V [B, G, H, kv_max]
            k_cache = k_cache.index_copy(2, input_pos, k.transpose(1, 2))
            v_cache = v_cache.index_copy(3, input_pos, v.permute(0, 2, 3, 1))
            keys_t = k_cache[:, :, :n].transpose(2, 3)
            values = v_cache[..., :n].transpose(2, 3)
        groups = self.num_heads // self.num_kv_heads
        # Queries of one kv group stacked along the sequence axis: [B, G, groups*T, H], so no K/V repeat is needed.
        q = q.transpose(1, 2).reshape(b, self.num_kv_heads, groups * t, self.head_dim)
        scores = torch.matmul(q * self.scale, keys_t)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if mask is None:
            mask = attention_mask(input_pos, slots, self.window)  # [1, 1, T, S]
        else:  # the input is the causal mask (one for every layer, as LiteRT-LM feeds it): a local layer keeps its
            mask = mask[..., :n]  # window by its own mask from input_pos, as litert-torch's Gemma 3 does
            if self.window is not None:  # a sum: masked twice is -2e9, still exactly 0 after softmax
                mask = mask + attention_mask(input_pos, slots, self.window)
        # [B, G, groups, T, S] + [1, 1, 1, T, S]: the mask broadcasts over the query groups instead of being tiled
        scores = (scores.view(b, self.num_kv_heads, groups, t, n) + mask[:, :, None]).view(
            b, self.num_kv_heads, groups * t, n
        )
        out = torch.matmul(torch.softmax(scores, dim=-1), values)  # [B, G, groups*T, H]
        out = out.reshape(b, self.num_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, self.q_size)
        return self.o_proj(out), k_cache, v_cache


ACTIVATIONS = {
    Activation.silu: F.silu,
    Activation.gelu: F.gelu,
    Activation.gelu_tanh: lambda x: F.gelu(x, approximate="tanh"),
    Activation.relu: F.relu,
}


class MLP(nn.Module):
    """Gated (gate and up fused in one projection) or plain feed-forward."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        mlp = arch.mlp
        self.gated = MLPType(mlp.type) is MLPType.gated
        self.act = ACTIVATIONS[Activation(mlp.activation)]
        if self.gated:
            self.gate_up_proj = nn.Linear(arch.dim, 2 * mlp.hidden_dim, bias=mlp.bias)
        else:
            self.up_proj = nn.Linear(arch.dim, mlp.hidden_dim, bias=mlp.bias)
        self.down_proj = nn.Linear(mlp.hidden_dim, arch.dim, bias=mlp.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.act(gate) * up)
        return self.down_proj(self.act(self.up_proj(x)))
