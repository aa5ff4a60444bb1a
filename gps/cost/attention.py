"""FLOPs, HBM bytes and time of one attention block on one GPU (GQA/MHA and DeepSeek MLA).

Conventions (see ``docs/cost_model.md``):

* Per-GPU share: ``attention_parallel="dp"`` gives each of the ``G`` GPUs ``B/G`` sequences
  (fractional, so the model vectorises; a real batch rounds up on some GPUs) with all heads;
  ``"tp"`` gives every GPU all ``B`` sequences and ``H/G`` query heads (KV heads
  ``max(H_kv/G, 1)``; the MLA latent cache is shared by all heads so it is not split), and
  adds a ring all-reduce of the block output.
* Causal prefill counts ``S**2 / 2`` query-key pairs per sequence and head (flash-attention
  skips the masked half; the diagonal term ``S/2`` is dropped). Decode counts ``C`` pairs per
  new token (the context includes the new token). A ``PrefillChunk`` (the later half of a
  prompt split for two-batch overlap) also attends to its ``prefix_len`` earlier tokens.
* Scores never go to HBM (flash attention); K/V of a prefill sequence are read once.
* RMSNorm, RoPE and residual adds are elementwise and ignored.
* MLA prefill uses the plain (non-absorbed) form: the latent is up-projected to per-head K/V.
  MLA decode uses the weight-absorbed form (DeepSeek-V2 paper, Sec. 2.1.3): ``W_UK`` is folded
  into the query and ``W_UV`` applied after the attention-weighted sum of latents, so scores
  are taken directly against the cached ``kv_lora_rank + qk_rope_head_dim`` latent.
"""

from __future__ import annotations

from dataclasses import dataclass

from gps.cost._common import act_bytes, dtype_bytes, element_bytes, gemm_dtype, sequences_per_gpu
from gps.cost.comm import allreduce_time
from gps.cost.roofline import Op, gemm, ops_time
from gps.hardware import Cluster
from gps.model import MoEModelSpec, tensor_dtype
from gps.workload import Workload, WorkloadError


@dataclass
class PrefillChunk(Workload):
    """A prefill step whose prompts continue ``prefix_len`` tokens each that earlier work of the
    same prompts put in the KV cache (the second half of one prompt split for two-batch overlap:
    ``gps.cost.e2e.micro_batches``). Its ``seq_len`` new tokens attend causally to the prefix
    and to each other: ``prefix_len * S + S**2 / 2`` query-key pairs per sequence and head, and
    the K/V of ``prefix_len + S`` tokens are read; projections run on the ``S`` new tokens only
    (the prefix's K/V, or MLA's per-head K/V, are already in HBM).

    Attributes:
        prefix_len: tokens of each prompt before this chunk, ``>= 0``.
    """

    prefix_len: int = 0

    def validate(self) -> None:
        super().validate()
        p = self.prefix_len
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise WorkloadError(f"prefix_len={p!r}: expected an integer >= 0")
        if self.phase != "prefill":
            raise WorkloadError(f"PrefillChunk: phase={self.phase!r}, expected 'prefill'")


def _local_heads(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> tuple[float, float]:
    """(query heads, KV heads) one GPU computes; fractional under TP."""
    att = spec.attention
    if workload.attention_parallel == "dp":
        return float(att.num_heads), float(att.num_kv_heads)
    return att.num_heads / num_gpus, max(att.num_kv_heads / num_gpus, 1.0)


def _step_shape(workload: Workload, seqs: float) -> tuple[float, float, float]:
    """(new tokens T, query-key pairs per head, KV tokens read) for ``seqs`` sequences; a
    ``PrefillChunk`` adds its prefix to the keys (``P * S`` more pairs, ``P`` more KV tokens)."""
    if workload.phase == "prefill":
        s = workload.seq_len
        p = workload.prefix_len if isinstance(workload, PrefillChunk) else 0
        return seqs * s, seqs * (p * s + s * s / 2.0), seqs * (p + s)
    c = workload.context_len
    return seqs, seqs * c, seqs * c


def gqa_ops(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> list[Op]:
    """Ops of one GQA/MHA block on one GPU: fused QKV projection, attention core, output proj.

    With ``T`` new tokens, ``P`` query-key pairs per head, ``K`` KV tokens read, ``h`` query
    heads, ``h_kv`` KV heads, ``D`` head_dim, ``d`` hidden; element bytes ``w`` (weights),
    ``a`` (activations), ``c`` (attention core), ``kv`` (KV cache) from ``spec.dtypes``:

    * qkv: ``2*T*d*(h+2h_kv)*D`` FLOPs; ``w*d*(h+2h_kv)*D + a*(T*d + T*(h+2h_kv)*D)`` bytes
      (K, V outputs are the new KV-cache entries).
    * core (at the attention dtype's peak): ``4*P*h*D`` FLOPs (QK^T and PV);
      ``c*2*T*h*D + kv*K*2*h_kv*D`` bytes (read Q and K/V, write O).
    * o: ``2*T*h*D*d`` FLOPs; ``w*h*D*d + a*(T*h*D + T*d)`` bytes.
    """
    att = spec.attention
    w, a, d, hd = element_bytes(spec), act_bytes(spec), spec.hidden_size, att.head_dim
    c, kvb = dtype_bytes(spec, "attention"), dtype_bytes(spec, "kv_cache")
    gdt, cdt = gemm_dtype(spec), tensor_dtype(spec, "attention")
    h, hkv = _local_heads(spec, workload, num_gpus)
    t, pairs, kv = _step_shape(workload, sequences_per_gpu(workload, num_gpus))
    qkv_w = (h + 2 * hkv) * hd
    core_bytes = c * 2 * t * h * hd + kvb * kv * 2 * hkv * hd
    return [
        gemm("qkv_proj", 2 * t * d * qkv_w, w * d * qkv_w + a * (t * d + t * qkv_w), d, dtype=gdt),
        Op("attn_core", 4 * pairs * h * hd, core_bytes, dtype=cdt, attention=True),
        gemm("o_proj", 2 * t * h * hd * d, w * h * hd * d + a * (t * h * hd + t * d), h * hd, gdt),
    ]


def mla_ops(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> list[Op]:
    """Ops of one MLA block on one GPU (prefill: plain form; decode: weight-absorbed form).

    Symbols: ``h`` local heads, ``r`` kv_lora_rank, ``q_r`` q_lora_rank, ``n`` qk_nope_head_dim,
    ``p`` qk_rope_head_dim, ``v`` v_head_dim; ``T``, ``P``, ``K``, ``d``, ``a`` as in ``gqa_ops``.
    Shared by both phases: q projection (``d*q_r + q_r*h*(n+p)`` weights, or ``d*h*(n+p)``
    without query compression), KV down-projection ``d*(r+p)`` (writes the latent cache entry),
    output projection ``h*v*d``. Every GEMM costs ``2*T*in*out`` FLOPs and
    ``w*in*out + a*(T*in + T*out)`` bytes and runs at the GEMM efficiency of ``K = in``
    (``GPUProfile.gemm_efficiency``: ``kv_up``'s ``K = r = 512`` well below the large-GEMM
    figure); the core runs at the attention dtype (``c`` bytes
    per element of Q, O and per-head K/V; ``kv`` bytes per cached latent element).

    * prefill: KV up-projection ``r -> h*(n+v)``; core ``2*P*h*(n+p) + 2*P*h*v`` FLOPs,
      reading Q, per-head K and V of the ``K`` tokens and writing O.
    * decode: ``q_nope`` absorbed through ``W_UK`` (per head ``n -> r``: ``2*T*h*n*r`` FLOPs,
      ``h*n*r`` weights); core ``2*P*h*(r+p)`` (scores on the latent) ``+ 2*P*h*r`` (weighted
      sum of latents) FLOPs, reading the latent cache ``K*(r+p)`` elements once for all heads;
      ``W_UV`` per head ``r -> v``.
    """
    att = spec.attention
    w, a, d = element_bytes(spec), act_bytes(spec), spec.hidden_size
    c, kvb = dtype_bytes(spec, "attention"), dtype_bytes(spec, "kv_cache")
    gdt, cdt = gemm_dtype(spec), tensor_dtype(spec, "attention")
    r, n, p, v = att.kv_lora_rank, att.qk_nope_head_dim, att.qk_rope_head_dim, att.v_head_dim
    h, _ = _local_heads(spec, workload, num_gpus)
    t, pairs, kv = _step_shape(workload, sequences_per_gpu(workload, num_gpus))

    def proj(name: str, k_in: float, k_out: float, heads: float = 1) -> Op:
        """``heads`` independent ``k_in -> k_out`` GEMMs (per-head batched when ``heads > 1``),
        reducing over ``k_in``."""
        flops = 2 * t * heads * k_in * k_out
        nbytes = heads * (w * k_in * k_out + a * (t * k_in + t * k_out))
        return gemm(name, flops, nbytes, k_in, gdt)

    if att.q_lora_rank:
        qr = att.q_lora_rank
        ops = [proj("q_down", d, qr), proj("q_up", qr, h * (n + p))]
    else:
        ops = [proj("q_proj", d, h * (n + p))]
    ops.append(proj("kv_down", d, r + p))
    if workload.phase == "prefill":
        core_flops = 2 * pairs * h * (n + p) + 2 * pairs * h * v
        core_bytes = c * (t * h * (n + p) + kv * h * (n + p) + kv * h * v + t * h * v)
        ops += [
            proj("kv_up", r, h * (n + v)),
            Op("attn_core", core_flops, core_bytes, dtype=cdt, attention=True),
        ]
    else:
        core_flops = 2 * pairs * h * (r + p) + 2 * pairs * h * r
        core_bytes = c * (t * h * (r + p) + t * h * r) + kvb * kv * (r + p)
        ops += [
            proj("q_absorb_uk", n, r, heads=h),
            Op("attn_core", core_flops, core_bytes, dtype=cdt, attention=True),
            proj("uv", r, v, heads=h),
        ]
    ops.append(proj("o_proj", h * v, d))
    return ops


def attention_ops(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> list[Op]:
    """Ops of one attention block on one GPU, by ``spec.attention.kind`` (``gqa`` | ``mla``)."""
    kind = spec.attention.kind
    if kind == "gqa":
        return gqa_ops(spec, workload, num_gpus)
    if kind == "mla":
        return mla_ops(spec, workload, num_gpus)
    raise ValueError(f"model {spec.name!r}: attention.kind={kind!r}; expected 'gqa' or 'mla'")


def attention_time(spec: MoEModelSpec, cluster: Cluster, workload: Workload) -> float:
    """Seconds for one attention block on the slowest GPU (all equal under the fractional share).

    Sum of ``op_time`` over ``attention_ops``; with ``attention_parallel="tp"`` plus
    ``allreduce_time`` of the block output (``T*d*a`` activation bytes for all ``T`` tokens).
    """
    g = cluster.num_gpus
    t = float(ops_time(attention_ops(spec, workload, g), cluster.gpu, gemm_dtype(spec)))
    if workload.attention_parallel == "tp":
        out_bytes = workload.tokens_per_step * spec.hidden_size * act_bytes(spec)
        t += float(allreduce_time(out_bytes, cluster))
    return t


def kv_cache_bytes_per_token(spec: MoEModelSpec) -> float:
    """KV-cache bytes per token per layer (all heads): GQA ``2*H_kv*D*kv``; MLA ``(r+p)*kv``
    (``kv``: bytes of ``dtypes.kv_cache``)."""
    att = spec.attention
    a = dtype_bytes(spec, "kv_cache")
    if att.kind == "mla":
        return float((att.kv_lora_rank + att.qk_rope_head_dim) * a)
    return float(2 * att.num_kv_heads * att.head_dim * a)
