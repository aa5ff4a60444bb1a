"""PNG plots of :class:`~gps.traces.stats.TraceStats` (what ``gps-trace inspect --plots`` writes).

matplotlib is imported inside the functions (``import gps.traces`` stays cheap). Figures are
drawn on matplotlib's Agg canvas directly, without ``pyplot``, so no global backend is
switched and nothing opens a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gps.traces.stats import TraceStats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120


def _figure(width: float, height: float) -> Figure:
    """A new figure on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI)
    return path


def _title(stats: TraceStats) -> str:
    """One line naming the trace for the top of every figure."""
    model = f"{stats.model}: " if stats.model else ""
    if stats.kind == "token_trace":
        shape = (
            f"T={stats.num_tokens} tokens, top-{stats.top_k} of E={stats.num_experts}, "
            f"L={stats.num_layers}"
        )
    else:
        shape = f"S={stats.num_steps} steps, E={stats.num_experts}, L={stats.num_layers}"
    return model + shape


def _layer_ticks(ax: object, num_layers: int) -> None:
    step = max(1, int(np.ceil(num_layers / 16)))
    ax.set_xticks(np.arange(0, num_layers, step))  # type: ignore[attr-defined]


def _heatmap(stats: TraceStats, path: Path) -> Path:
    """Per-layer expert load relative to uniform, ``[L, E]``, diverging around 1."""
    from matplotlib.colors import TwoSlopeNorm

    rel = stats.proportions * stats.num_experts  # 1 = the uniform share
    e, layers = stats.num_experts, stats.num_layers
    fig = _figure(min(14.0, 3.0 + 0.35 * e), min(14.0, 2.5 + 0.2 * layers))
    ax = fig.add_subplot()
    lo, hi = float(rel.min()), float(rel.max())
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(lo, 0.99), vmax=max(hi, 1.01))
    image = ax.imshow(rel, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    if e <= 32:
        ax.set_xticks(np.arange(e))
    fig.colorbar(image, ax=ax, label="load / uniform load (1 = balanced)")
    ax.set_title(f"Expert load per layer, whole trace\n{_title(stats)}", fontsize=10)
    return _save(fig, path)


def _balance(stats: TraceStats, path: Path) -> Path:
    """Per-layer imbalance (bars up from 1) and entropy (bars down from ``log2 E``)."""
    layers = np.arange(stats.num_layers)
    fig = _figure(min(14.0, 4.0 + 0.25 * stats.num_layers), 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    unit = f"batch of {stats.batch_size} tokens" if stats.kind == "token_trace" else "step"
    top.bar(
        layers,
        stats.imbalance - 1.0,
        bottom=1.0,
        color="tab:red",
        alpha=0.75,
        label=f"max/mean GPU load per {unit}, G={stats.ep_degree} (mean over batches)",
    )
    top.plot(
        layers,
        stats.imbalance_expert,
        "o",
        color="black",
        markersize=4,
        label="max/mean expert load, whole trace",
    )
    top.axhline(1.0, color="grey", linewidth=0.8)
    top.set_ylabel("max / mean load")
    top.legend(fontsize=8, loc="upper right")
    top.set_title(f"Load balance per layer (1 = perfectly balanced)\n{_title(stats)}", fontsize=10)
    uniform = float(np.log2(stats.num_experts))
    bottom.bar(
        layers, stats.entropy - uniform, bottom=uniform, color="tab:blue", alpha=0.75, width=0.8
    )
    bottom.axhline(uniform, color="grey", linewidth=0.8, linestyle="--")
    bottom.text(
        0.99,
        0.04,
        f"dashed: uniform = log2(E) = {uniform:.2f} bits",
        transform=bottom.transAxes,
        ha="right",
        fontsize=8,
    )
    lowest = float(np.nanmin(stats.entropy)) if np.isfinite(stats.entropy).any() else 0.0
    span = max(uniform - lowest, 0.05 * max(uniform, 1.0))
    bottom.set_ylim(max(0.0, lowest - 0.3 * span), uniform + 0.15 * span)
    bottom.set_ylabel("entropy of load, bits")
    bottom.set_xlabel("MoE layer")
    _layer_ticks(bottom, stats.num_layers)
    return _save(fig, path)


def _transition_layers(num_pairs: int) -> list[int]:
    """Up to three evenly spaced layer pairs ``l -> l+1``: first, middle, last."""
    return sorted({0, num_pairs // 2, num_pairs - 1})


def _transitions(stats: TraceStats, path: Path) -> Path:
    """Row-stochastic ``P(expert at l+1 | expert at l)`` for up to three layer pairs."""
    assert stats.transitions is not None and stats.mutual_information is not None
    chosen = _transition_layers(stats.transitions.shape[0])
    e = stats.num_experts
    size = min(5.0, 2.0 + 0.25 * e)
    fig = _figure(size * len(chosen) + 1.2, size + 0.9)
    axes = np.atleast_1d(fig.subplots(1, len(chosen)))
    vmax = float(stats.transitions[chosen].max())
    image = None
    for ax, layer in zip(axes, chosen, strict=True):
        matrix = stats.transitions[layer]
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
        mi = float(stats.mutual_information[layer])
        ax.set_title(f"layer {layer} -> {layer + 1}\nMI = {mi:.3f} bits", fontsize=9)
        ax.set_xlabel(f"expert at layer {layer + 1}")
        ax.set_ylabel(f"expert at layer {layer}")
        if e <= 8:
            ax.set_xticks(np.arange(e))
            ax.set_yticks(np.arange(e))
            for (i, j), p in np.ndenumerate(matrix):
                colour = "black" if p > 0.6 * vmax else "white"
                ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=list(axes), label="P(next expert | expert)", shrink=0.8)
    fig.suptitle(
        f"Cross-layer transitions (uniform rows = 1/E = {1 / e:.3f})\n{_title(stats)}",
        fontsize=10,
    )
    return _save(fig, path)


def _autocorrelation(stats: TraceStats, path: Path) -> Path:
    """Lag-1 autocorrelation per layer, and the autocorrelation function across layers."""
    unit = "batches" if stats.kind == "token_trace" else "steps"
    fig = _figure(11.0, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    layers = np.arange(stats.num_layers)
    left.bar(layers, np.nan_to_num(stats.autocorrelation), color="tab:green", alpha=0.8)
    left.axhline(0.0, color="grey", linewidth=0.8)
    left.set_ylim(-1.05, 1.05)
    left.set_xlabel("MoE layer")
    left.set_ylabel("lag-1 autocorrelation")
    left.set_title(f"Load proportions, consecutive {unit}", fontsize=9)
    _layer_ticks(left, stats.num_layers)
    by_lag = stats.autocorrelation_lags
    lags = np.arange(1, by_lag.shape[0] + 1)
    if by_lag.size and np.isfinite(by_lag).any():
        finite = np.where(np.isfinite(by_lag), by_lag, np.nan)
        with np.errstate(all="ignore"):
            q = np.nanpercentile(finite, [10, 50, 90], axis=1)
        right.fill_between(
            lags, q[0], q[2], color="tab:green", alpha=0.25, label="10-90 % of layers"
        )
        right.plot(lags, q[1], "o-", color="tab:green", label="median layer")
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, f"too few {unit}", ha="center", va="center", transform=right.transAxes)
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set_ylim(-1.05, 1.05)
    right.set_xlabel(f"lag ({unit})")
    right.set_ylabel("autocorrelation")
    right.set_title("Autocorrelation function", fontsize=9)
    fig.suptitle(
        f"How well the previous {unit[:-1]}'s load predicts the next "
        f"(1 = persistent, 0 = none)\n"
        f"{_title(stats)}",
        fontsize=10,
    )
    return _save(fig, path)


def _over_time(stats: TraceStats, path: Path) -> Path:
    """Stacked expert load proportions over steps for up to four layers."""
    layers = sorted({0, stats.num_layers // 3, 2 * stats.num_layers // 3, stats.num_layers - 1})
    e = stats.num_experts
    fig = _figure(11.0, 1.0 + 2.2 * len(layers))
    axes = np.atleast_1d(fig.subplots(len(layers), 1, sharex=True))
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    cmap = colormaps["tab20"]
    colours = [cmap(i % 20) for i in range(e)]
    x = stats.time_index
    for ax, layer in zip(axes, layers, strict=True):
        ax.stackplot(x, stats.load_over_time[:, layer, :].T, colors=colours, linewidth=0)
        if e <= 16:
            for level in np.arange(1, e) / e:
                ax.axhline(level, color="white", linewidth=0.4, alpha=0.6)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel(f"layer {layer}\nshare")
    axes[-1].set_xlabel("step" if stats.kind == "load_series" else "batch")
    if e <= 16:
        handles = [Patch(color=c, label=f"{i}") for i, c in enumerate(colours)]
        fig.legend(handles=handles, title="expert", loc="outside right center", fontsize=7)
    fig.suptitle(
        "Expert load proportions over time (white lines: uniform shares)\n" + _title(stats),
        fontsize=10,
    )
    return _save(fig, path)


def plot_trace_stats(stats: TraceStats, out_dir: Path) -> list[Path]:
    """Write PNG plots of ``stats`` into ``out_dir`` (created if missing); return their paths.

    Always: ``expert_load_heatmap.png`` (``[L, E]`` load relative to uniform),
    ``layer_balance.png`` (per-layer imbalance and entropy). Token traces with ``L >= 2``:
    ``transitions.png`` (transition matrices of the first, middle and last layer pairs).
    With at least 3 batches (steps): ``autocorrelation.png``. Load series:
    ``load_over_steps.png`` (stacked expert shares over steps for up to four layers).
    Existing files of these names are overwritten.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        _heatmap(stats, out_dir / "expert_load_heatmap.png"),
        _balance(stats, out_dir / "layer_balance.png"),
    ]
    if stats.transitions is not None and stats.transitions.shape[0] > 0:
        written.append(_transitions(stats, out_dir / "transitions.png"))
    if stats.autocorrelation_lags.shape[0] > 0:
        written.append(_autocorrelation(stats, out_dir / "autocorrelation.png"))
    if stats.kind == "load_series" and stats.load_over_time.shape[0] > 1:
        written.append(_over_time(stats, out_dir / "load_over_steps.png"))
    return written
