"""PNG plots of one run's ``results.json`` (matplotlib, Agg backend; imported lazily).

Every function takes plain dicts/lists from the results schema (``docs/results.md``) and an
output path, writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BREAKDOWN_ORDER = (
    "attention", "gate", "predictor", "dispatch", "experts", "combine", "shared", "migration",
    "expert_fetch", "non_moe", "engine",
)  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a 110-dpi PNG at ``path``, free it, return ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_breakdown(strategies: list[dict], path: Path) -> Path:
    """Stacked horizontal bars: milliseconds per component of each strategy's step."""
    plt = _pyplot()
    names = [s["name"] for s in strategies]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    left = np.zeros(len(names))
    colors = plt.get_cmap("tab10")
    for i, comp in enumerate(BREAKDOWN_ORDER):
        ms = np.array([s["breakdown_s"].get(comp, 0.0) * 1e3 for s in strategies])
        if not ms.any():
            continue
        ax.barh(names, ms, left=left, label=comp, color=colors(i))
        left += ms
    for y, s in enumerate(strategies):
        bound = s["balanced_time_s"] * 1e3
        ax.plot([bound, bound], [y - 0.4, y + 0.4], color="black", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per step (black tick: perfectly balanced bound)")
    ax.legend(ncol=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _save(fig, path)


def plot_gpu_load(loads: dict[str, list[float]], path: Path) -> Path:
    """Grouped bars: each GPU's expert tokens / mean over GPUs, per named strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    g = len(next(iter(loads.values())))
    width = 0.8 / len(loads)
    for i, (name, load) in enumerate(loads.items()):
        arr = np.asarray(load, dtype=float)
        rel = arr / arr.mean() if arr.mean() > 0 else arr
        ax.bar(np.arange(g) + i * width, rel, width, label=f"{name} (max {rel.max():.2f})")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(np.arange(g) + 0.4 - width / 2, [str(i) for i in range(g)])
    ax.set_xlabel("GPU")
    ax.set_ylabel("tokens / mean (busiest layer)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_speedup(guide: dict, path: Path) -> Path:
    """Token-to-Expert speed-up vs predictor accuracy (one line per overhead level), the best
    Distribution-Only speed-up as a horizontal line, crossovers marked."""
    plt = _pyplot()
    acc = np.asarray(guide["accuracy"])
    speed = np.asarray(guide["token_speedup"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, ov in enumerate(guide["overhead_s"]):
        ax.plot(acc, speed[i], marker="o", ms=3, label=f"token predictor {ov * 1e6:.0f} us/layer")
    ax.axhline(
        guide["distribution_speedup"], color="black", ls="--",
        label=f"best Distribution-Only ({guide['distribution_name']})",
    )  # fmt: skip
    for i, x in enumerate(guide["crossover_accuracy"]):
        if x is not None and np.isfinite(x):
            ax.plot([x], [guide["distribution_speedup"]], "kx", ms=9)
            ax.annotate(f"{x:.2f}", (x, guide["distribution_speedup"]), fontsize=8,
                        xytext=(4, 6 + 10 * i), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("Token-to-Expert top-k accuracy (what-if predictor)")
    ax.set_ylabel("speed-up over no balancing")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_frontier(guide: dict, path: Path, published: list[dict] | None = None) -> Path:
    """Heat-map over (accuracy, overhead) of Token-to-Expert speed-up minus the best
    Distribution-Only speed-up; the 0 contour is the frontier. ``published``: the
    ``published_predictors`` entries with a priced overhead, drawn as numbered triangles and
    named in a legend below the axes ('published, not measured here'), so that no label runs
    into another or into the title; the y axis leaves room above the highest triangle."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    acc = np.asarray(guide["accuracy"])
    ov = np.asarray(guide["overhead_s"]) * 1e6
    diff = np.asarray(guide["token_speedup"]) - guide["distribution_speedup"]
    lim = max(float(np.abs(diff).max()), 1e-6)
    priced = [p for p in published or [] if p["overhead_s_per_layer"] is not None]
    rows = -(-len(priced) // 2)  # legend rows below the axes, two names a row
    fig, ax = plt.subplots(figsize=(7, 4 + 0.22 * rows))
    mesh = ax.pcolormesh(acc, ov, diff, cmap="RdBu", vmin=-lim, vmax=lim, shading="nearest")
    if diff.min() < 0 < diff.max() and len(acc) > 1 and len(ov) > 1:
        ax.contour(acc, ov, diff, levels=[0.0], colors="black", linewidths=1.2)
    if priced:
        x = [p["topk_hit_rate"] for p in priced]
        y = [p["overhead_s_per_layer"] * 1e6 for p in priced]
        ax.scatter(x, y, marker="^", s=50, c="gold", edgecolors="black", zorder=3)
        for i, (xi, yi) in enumerate(zip(x, y, strict=True), 1):
            ax.annotate(str(i), (xi, yi), fontsize=7, xytext=(0, 6), ha="center",
                        textcoords="offset points", zorder=4)  # fmt: skip
        low, high = ax.get_ylim()
        top = max(high, max(y))
        ax.set_ylim(low, top + 0.12 * (top - low))  # room for the numbers above the triangles
        handles = [Line2D([], [], ls="", marker="^", ms=6, mfc="gold", mec="black",
                          label=f"{i}: {p['name']}") for i, p in enumerate(priced, 1)]  # fmt: skip
        ax.legend(handles=handles, title="published, not measured here", fontsize=7,
                  title_fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  frameon=False)  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="Token-to-Expert minus Distribution-Only speed-up")
    ax.set_xlabel("Token-to-Expert top-k accuracy")
    ax.set_ylabel("predictor overhead (us per MoE layer)")
    ax.set_title("blue: Token-to-Expert wins; red: Distribution-Only wins", fontsize=9)
    return _save(fig, path)


def all_tied(rows: list[dict]) -> dict[tuple, bool]:
    """Per (overhead, resident experts, link, skew, tokens): whether every swept accuracy's
    ``winner`` is ``tie`` (the families serve the same step time there)."""
    out: dict[tuple, bool] = {}
    for r in rows:
        key = (r["overhead_us"], r.get("resident_experts", 1.0), r["link_gbps"],
               r["skew_target"], r["tokens_per_step"])  # fmt: skip
        out[key] = out.get(key, True) and r["winner"] == "tie"
    return out


def plot_guideline_map(gm: dict, path: Path) -> Path:
    """MoE-GPS Figure 1 with numbers: one heat map per (overhead, resident experts, link) panel
    over skew x tokens per step; colour and label = the crossover accuracy above which
    Token-to-Expert beats Distribution-Only; grey where it never does in the swept accuracies:
    "tie" when every accuracy gives both families the same step time, else "DO"."""
    plt = _pyplot()
    ax_ = gm["axes"]
    skews, links, tokens, ovs = ax_["skews"], ax_["link_gbps"], ax_["tokens"], ax_["overheads_us"]
    panels = [(ov, res) for ov in ovs for res in ax_.get("resident_experts", [1.0])]
    lo = ax_["accuracies"][0]
    cross = {(r["overhead_us"], r.get("resident_experts", 1.0), r["link_gbps"], r["skew_target"],
              r["tokens_per_step"]): r["crossover_accuracy"] for r in gm["rows"]}  # fmt: skip
    tied = all_tied(gm["rows"])
    fig, axes = plt.subplots(len(panels), len(links), squeeze=False,
                             figsize=(2.6 * len(links) + 1.2, 2.5 * len(panels) + 0.6))  # fmt: skip
    fig.subplots_adjust(hspace=0.5, wspace=0.3)
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#d9d9d9")
    mesh = None
    for i, (ov, res) in enumerate(panels):
        for j, link in enumerate(links):
            ax = axes[i, j]
            grid = np.array([[cross.get((ov, res, link, s, t)) for t in tokens] for s in skews],
                            dtype=float)  # None -> nan  # fmt: skip
            mesh = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=1.0,
                             origin="lower", aspect="auto")  # fmt: skip
            for (y, x), v in np.ndenumerate(grid):
                dark = not np.isnan(v) and v <= 0.75
                grey = "tie" if tied.get((ov, res, link, skews[y], tokens[x])) else "DO"
                ax.text(x, y, grey if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=7, color="white" if dark else "black")  # fmt: skip
            ax.set_xticks(range(len(tokens)), [f"{t // 1024}k" if t >= 1024 else str(t)
                                               for t in tokens], fontsize=7)  # fmt: skip
            ax.set_yticks(range(len(skews)), [f"{s:g}" for s in skews], fontsize=7)
            ax.set_title(f"{link:g} GB/s, {ov:g} us/layer, HBM {res:g}", fontsize=8)
            if i == len(panels) - 1:
                ax.set_xlabel("tokens per step", fontsize=7)
            if j == 0:
                ax.set_ylabel("skew (max/mean)", fontsize=7)
    if mesh is not None:
        label = (
            "crossover T2E accuracy (grey: never; DO: Distribution-Only faster, "
            "tie: same step time)"
        )
        fig.colorbar(mesh, ax=axes, shrink=0.8, label=label)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path
