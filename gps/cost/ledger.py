"""The mechanism ledger: every way information turns into step time, declared once.

Each ``Mechanism`` of ``LEDGER`` names the information it needs, the moment that information
exists in a layer (``before attention``: a prediction made from the layer's input or from
history; ``after the gate``: the real routing of this batch; ``after the step``: what the
strategy observes for the next steps), the resource it occupies, which strategies get it and
what a wrong guess costs. ``docs/cost_model.md`` prints the same table (a test keeps them
equal). The advisor hands pricing one ``StepExtras`` per strategy built from these rules
(``gps.advisor.ledger``); this module holds the physics that every strategy shares:

* ``port_exposure``: what a layer's GPU ports carry beside attention -- the all-to-alls a
  two-batch schedule runs there, replica copies, the post-gate chunked dispatch and
  expert-weight prefetch -- with **one budget per port**: a port hides at most
  ``window * attention`` seconds of work, whoever's it is; nothing a port carries before the
  gate may be a tensor that exists only after it.
* ``chunk_pipeline_exposed``: the chunked dispatch as a two-stage pipeline of attention chunks
  and real all-to-alls of a chunk's traffic (each with its mode's fixed cost), the attention
  slowed by the SMs a running dispatch holds (``stretched_end``).
* ``prefetched_fraction``: how much of each non-resident slot a port brings in before the gate
  in the order of the strategy's belief (equal beliefs share the port evenly).
* ``hidden_state_move_bytes``: why moving a token's pre-attention hidden state to its predicted
  expert's GPU (so that its attention runs there) is not credited: the K/V context the moved
  attention reads outweighs the dispatch it saves.

Shapes: ``...`` sweep dimensions, ``L`` MoE layers, ``G`` GPUs, ``R`` slots per GPU.
Units: seconds, bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gps.cost._common import dtype_bytes
from gps.cost.attention import kv_cache_bytes_per_token
from gps.cost.step import Prefetch, StepExtras, transfer_seconds
from gps.model import MoEModelSpec
from gps.workload import Workload

# Bytes still missing below this fraction of one expert count as fetched (rounding noise of
# ``slots_fit``, not a transfer that pays a link latency).
MISSING_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Mechanism:
    """One line of the ledger (``docs/cost_model.md``, "The mechanism ledger").

    Attributes:
        name: what it is called in docs and switches.
        information: what it needs to know.
        moment: when, within a layer, that information exists.
        resource: the compute or port it occupies.
        who: which strategies get it (every strategy whose information allows it).
        wrong_guess: what a wrong guess costs.
        switch: the config key that turns it on or off (``None``: always priced).
    """

    name: str
    information: str
    moment: str
    resource: str
    who: str
    wrong_guess: str
    switch: str | None


LEDGER: tuple[Mechanism, ...] = (
    Mechanism(
        "nearest-replica dispatch", "the token's real experts", "after the gate",
        "dispatch all-to-all (fewer cross-GPU bytes)", "every strategy, the baseline included",
        "none: it acts on the real routing", "strategy.replica_choice",
    ),
    Mechanism(
        "chunked dispatch", "each chunk's real experts", "after each chunk's gate",
        "NVLink/NIC ports during the remaining attention (shared port budget); SMs the "
        "dispatch kernels hold", "every strategy, the baseline included", "none: it acts on "
        "the real routing; the last chunk's dispatch is never hidden and every chunk pays its "
        "all-to-all's fixed cost, so chunking can cost more than not chunking",
        "strategy.dispatch_chunks",
    ),
    Mechanism(
        "two-batch overlap", "none", "after the gate (per micro-batch)",
        "compute and communication streams of two micro-batches; its all-to-alls take the "
        "NVLink/NIC ports during attention (shared port budget)", "every strategy",
        "none", "workload.overlap",
    ),
    Mechanism(
        "replica pre-positioning", "a forecast of the batch's expert loads", "before attention "
        "(forecast) or after the step (history)", "spare expert slots; the copies cross "
        "NVLink/NIC or PCIe ports (shared port budget)", "every strategy with a forecast: "
        "Distribution-Only, Token-to-Expert (its guesses' histogram), periodic EPLB (window "
        "mean), oracle (the truth)", "replicas of idle experts, copies that do not pay back; "
        "the keep-or-switch rule weighs them on the strategy's own forecast", "strategy.replicas",
    ),
    Mechanism(
        "expert-weight prefetch", "which non-resident slots the batch will use",
        "before attention", "the fetch link's port (shared port budget)",
        "every strategy, in the order of its belief: token guesses, a forecast's expected "
        "loads, the history's mean (no balancing and static placements), the truth (oracle); "
        "without a belief every slot of the plan shares the port evenly",
        "port time spent on slots that stay idle; missed busy slots are fetched "
        "after the gate, on the critical path", "strategy.prefetch",
    ),
    Mechanism(
        "pre-attention hidden-state move", "the token's predicted expert", "before attention",
        "NVLink/NIC ports; the moved token's attention and K/V context where it lands",
        "nobody (not credited): the K/V context the moved attention needs outweighs the "
        "dispatch it saves (hidden_state_move_bytes)", "a miss dispatches from the new GPU",
        None,
    ),
    Mechanism(
        "skip the scatter (MoE-GPS paper)", "the token's predicted experts", "before attention",
        "none (the paper's assumption, not our physics)", "Token-to-Expert under "
        "assumptions=moe_gps_paper only", "mispredicted copies pay a corrective all-to-all in "
        "the workload's all-to-all mode", "assumptions.t2e_dispatch",
    ),
)  # fmt: skip


def ledger_markdown() -> str:
    """``LEDGER`` as the Markdown table ``docs/cost_model.md`` prints (a test keeps them equal)."""
    head = ("| mechanism | information | moment | resource | who gets it | a wrong guess costs "
            "| switch |\n| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    rows = [
        f"| {m.name} | {m.information} | {m.moment} | {m.resource} | {m.who} | {m.wrong_guess} "
        f"| {f'`{m.switch}`' if m.switch else '-'} |"
        for m in LEDGER
    ]
    return "\n".join([head, *rows])


def prefetched_fraction(
    score: np.ndarray, candidate: np.ndarray, slots_fit: np.ndarray
) -> np.ndarray:
    """``[..., R]`` fraction of each candidate slot a port fetches before the gate.

    The port fetches candidates in decreasing ``score``; candidates with equal scores share the
    port evenly (the expected outcome of fetching them in an order that knows nothing about
    them). ``slots_fit [...]``: how many whole slots' bytes the port moves before the gate.
    A slot with ``a`` candidate bytes ranked above it and ``q`` (itself included) tied with it
    gets ``clip((slots_fit - a) / q, 0, 1)``; non-candidates get 0.

    Args:
        score: ``[..., R]`` float belief (any real; ``-inf`` for a non-candidate is allowed).
        candidate: ``[..., R]`` bool: slots the port may fetch.
        slots_fit: ``[...]`` float >= 0.
    """
    s = np.where(candidate, score, -np.inf)
    c = candidate[..., None, :]
    above = ((s[..., None, :] > s[..., :, None]) & c).sum(axis=-1)  # [..., R]
    tied = ((s[..., None, :] == s[..., :, None]) & c).sum(axis=-1)
    frac = (np.asarray(slots_fit)[..., None] - above) / np.maximum(tied, 1)
    return np.where(candidate, np.clip(frac, 0.0, 1.0), 0.0)


def prefetch_exposed(prefetch: Prefetch, port_left_s: np.ndarray) -> np.ndarray:
    """``[..., L, G]`` seconds each GPU waits after the gate for busy non-resident weights.

    Before the gate the port has ``port_left_s [..., L, G]`` seconds free (its budget minus the
    port work ranked before prefetch); after one latency it moves ``gpu_bandwidth`` bytes per
    second of them into candidate slots (non-resident slots with a finite score) in the order
    of ``prefetch.score`` (``prefetched_fraction``). After the gate the port fetches what is
    still missing of every busy non-resident slot: ``transfer_seconds(missing bytes)``.
    """
    p = prefetch
    busy = np.asarray(p.busy, dtype=bool)
    away = ~np.asarray(p.resident, dtype=bool)
    score = np.broadcast_to(np.asarray(p.score, dtype=float), busy.shape)
    candidate = away & np.isfinite(score)
    eb = float(p.expert_bytes)
    if eb == 0.0 or not (busy & away).any():
        return np.zeros(busy.shape[:-1])
    budget = np.maximum(np.asarray(port_left_s, dtype=float) - p.link.latency_s, 0.0)
    fit = budget * p.link.gpu_bandwidth / eb
    frac = prefetched_fraction(score, candidate, fit)
    missing = ((busy & away) * (1.0 - frac)).sum(axis=-1) * eb
    missing = np.where(missing > MISSING_TOLERANCE * eb, missing, 0.0)  # float noise of a fit
    return transfer_seconds(missing, p.link)


def stretched_end(
    start: np.ndarray,
    work: np.ndarray,
    busy_from: np.ndarray,
    busy_to: np.ndarray,
    rate: float | np.ndarray,
) -> np.ndarray:
    """When a compute stage of ``work`` seconds (at full speed) starting at ``start`` ends, if it
    runs at ``rate`` (< 1: the SMs a concurrent communication kernel holds are gone) while the
    communication stream is busy over ``[busy_from, busy_to]`` and at full speed otherwise (a
    fluid model). All times in seconds; arrays broadcast and the result has their broadcast
    shape. ``rate`` is a share of the SMs in (0, 1]; ``rate == 1`` gives ``start + work``.
    The stage ends at least ``start + work`` and at most ``(1 - rate) * (busy_to - busy_from)``
    later (it loses ``1 - rate`` of each second it overlaps the communication)."""
    end = start + work
    if np.all(rate >= 1.0):
        return end
    t1 = np.maximum(start, busy_from)
    overlaps = (busy_to > start) & (busy_from < end) & (busy_to > t1)
    done = t1 - start  # work done before the communication starts
    left = work - done
    window = busy_to - t1
    inside = t1 + np.divide(left, rate)
    after = busy_to + (left - rate * window)
    return np.where(overlaps, np.where(left <= rate * window, inside, after), end)


def chunk_pipeline_exposed(
    attention_s: np.ndarray, chunk_s: np.ndarray, chunks: int, compute_rate: float = 1.0
) -> np.ndarray:
    """Seconds ``[...]`` the chunked dispatch ends after the layer's whole attention would.

    Attention runs in ``c = chunks`` chunks of ``a = attention_s / c`` seconds each (at full
    speed) on the compute stream; chunk ``i``'s dispatch, ``chunk_s`` seconds (a real all-to-all
    of ``1/c`` of the traffic, with its mode's fixed cost), starts when chunk ``i``'s attention
    is done and the previous chunk's dispatch has ended. While a dispatch runs, its kernels
    hold SMs: an attention chunk overlapping it runs at ``compute_rate`` of its speed
    (``stretched_end``). The result is ``end of the last dispatch - attention_s``; with
    ``compute_rate = 1`` it is the two-stage pipeline's ``d + (c - 1) * max(0, d - a)`` (the
    last chunk's dispatch is never hidden), with fewer SMs it also holds the attention's
    stretch. ``c = 1`` gives ``chunk_s``.
    """
    attn = np.asarray(attention_s, dtype=float)
    d = np.asarray(chunk_s, dtype=float)
    a = attn / chunks
    t_attn = np.zeros(np.broadcast_shapes(attn.shape, d.shape))
    t_comm = t_attn  # end of the previous chunk's dispatch
    for _ in range(chunks):
        t_attn = stretched_end(t_attn, a, t_attn, t_comm, compute_rate)
        t_comm = np.maximum(t_attn, t_comm) + d
    return t_comm - attn


def port_exposure(
    attention_s: np.ndarray,
    dispatch_s: np.ndarray,
    dispatch_ports: tuple[str, ...],
    extras: StepExtras,
    *,
    chunk_dispatch_s: np.ndarray | None = None,
    compute_rate: float = 1.0,
    taken_s: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Exposed seconds ``[..., L]`` of ``dispatch``, ``migration`` and ``expert_fetch``.

    Every GPU port (``gps.cost.step.PORTS``) has ``W = extras.window * attention`` seconds
    before the gate to carry the coming MoE block's work; one budget per port, spent in this
    order:

    0. under two-batch overlap, the all-to-alls the schedule runs inside the attention stages
       (``taken_s``: one micro-batch's dispatch under the other's attention, the previous
       layer's last combine under the first attention; ``gps.cost.e2e.two_batch_schedule``)
       take ``taken_s`` of every dispatch port's budget first;
    1. replica copies (``extras.migration_s[port] [..., L, G]``): exposed
       ``max(0, M - budget)`` on each port, the slowest port of the slowest GPU setting the
       layer;
    2. the post-gate chunked dispatch (``extras.dispatch_chunks = c > 1``): each of the ``c``
       chunks' dispatch is a real all-to-all of ``1/c`` of the traffic, ``d_c =
       chunk_dispatch_s`` (its mode's latency or fixed kernel cost included), pipelined with
       the attention chunks (``chunk_pipeline_exposed``, the attention chunks slowed to
       ``compute_rate`` while a dispatch holds SMs). The ``c * d_c`` seconds of port time not
       exposed by the pipeline run inside the window, on ``dispatch_ports``, and take their
       budget left after step 1: ``exposed = max(pipeline, c * d_c - room)``, ``room`` the
       least budget left on any dispatch port of any GPU (the all-to-all is collective).
       Chunking can expose more than the unchunked ``dispatch_s`` (every chunk pays its
       kernel's fixed cost);
    3. prefetch of non-resident expert weights (``extras.prefetch``) gets what is left of its
       port's budget (``prefetch_exposed``).

    Args:
        attention_s: ``[..., L]`` attention seconds of each layer.
        dispatch_s: ``[..., L]`` the (unchunked) dispatch all-to-all's seconds.
        dispatch_ports: ports the dispatch crosses (``intra``, and ``inter`` across nodes).
        extras: the strategy's ``StepExtras``.
        chunk_dispatch_s: ``[..., L]`` one chunk's dispatch seconds; needed when
            ``extras.dispatch_chunks > 1``.
        compute_rate: share of the SMs compute keeps while a dispatch kernel runs, (0, 1].
        taken_s: ``[..., L]`` seconds of every dispatch port's budget the two-batch schedule's
            all-to-alls use inside attention; ``None``: none (no two-batch overlap).

    Returns:
        ``{"dispatch", "migration", "expert_fetch"}``, each ``[..., L]`` exposed seconds.
    """
    if not 0.0 < compute_rate <= 1.0:
        raise ValueError(f"compute_rate={compute_rate}: expected a share of SMs in (0, 1]")
    attn = np.asarray(attention_s, dtype=float)
    window = extras.window * attn[..., None]  # [..., L, 1] each GPU's port budget
    budget = dict.fromkeys(("intra", "inter", "host"), window)
    if taken_s is not None:
        taken = np.asarray(taken_s, dtype=float)[..., None]
        for p in dispatch_ports:
            budget[p] = np.maximum(window - taken, 0.0)
    ports = {"intra": 0.0, "inter": 0.0, "host": 0.0, **extras.migration_s}
    mig = {p: np.asarray(v, dtype=float) for p, v in ports.items()}
    migration = 0.0
    for p, m in mig.items():
        migration = np.maximum(migration, np.maximum(m - budget[p], 0.0))
    left = {p: np.maximum(budget[p] - m, 0.0) for p, m in mig.items()}
    d = np.asarray(dispatch_s, dtype=float)
    c = extras.dispatch_chunks
    if c > 1 and dispatch_ports:
        if chunk_dispatch_s is None:
            raise ValueError("port_exposure: dispatch_chunks > 1 needs chunk_dispatch_s")
        dc = np.asarray(chunk_dispatch_s, dtype=float)
        port_time = c * dc
        room = np.min(np.stack(np.broadcast_arrays(*(left[p] for p in dispatch_ports))), axis=0)
        room = room.min(axis=-1)  # collective: the least free GPU sets the layer
        d = np.maximum(chunk_pipeline_exposed(attn, dc, c, compute_rate), port_time - room)
        inside = np.maximum(port_time - d, 0.0)  # port time the window carries
        for p in dispatch_ports:
            left[p] = np.maximum(left[p] - inside[..., None], 0.0)
    fetch = np.zeros(())
    if extras.prefetch is not None:
        fetch = prefetch_exposed(extras.prefetch, left[extras.prefetch.port]).max(axis=-1)
    migration = np.max(np.broadcast_to(migration, np.broadcast_shapes(
        np.shape(migration), window.shape)), axis=-1)  # fmt: skip
    return {"dispatch": d, "migration": migration, "expert_fetch": fetch}


def hidden_state_move_bytes(spec: MoEModelSpec, workload: Workload) -> tuple[float, float]:
    """``(moved, saved)`` bytes per token of moving its pre-attention hidden state to its
    predicted expert's GPU so that attention runs there (the only early dispatch of a tensor
    that exists before attention).

    ``saved``: the dispatch of one copy, ``d * dispatch bytes``. ``moved``: the hidden state
    (``d * activation bytes``) plus the K/V context its attention reads at the new GPU for this
    layer -- decode: ``C`` cached tokens; prefill: on average half the prompt (``S / 2``),
    ``kv_cache_bytes_per_token`` each -- which lives with the token's sequence, not with the
    predicted expert. ``moved > saved`` for every model and workload moe-gps knows: the move
    costs more on the same ports than it saves, so the ledger does not credit it.
    """
    d = spec.hidden_size
    context = workload.context_len if workload.phase == "decode" else workload.seq_len / 2
    moved = d * dtype_bytes(spec, "activations") + context * kv_cache_bytes_per_token(spec)
    return float(moved), float(d * dtype_bytes(spec, "dispatch"))
