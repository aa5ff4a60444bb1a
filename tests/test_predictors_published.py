"""Published operating points: the shipped file loads, every entry is sourced, metrics convert
to ours as stated, overhead is priced from the shapes, and bad files name entry and field;
the report shows them as published, not measured here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_predictors_helpers import gpu

from gps.advisor.published import place
from gps.model import load_model_spec
from gps.report.document import Table, render_markdown
from gps.report.plots import plot_frontier
from gps.report.run_report import published_blocks
from predictors.published import (
    PUBLISHED_PATH,
    PublishedError,
    load_published,
    published_points,
    select_for_model,
)

ENTRIES = load_published()


def test_shipped_file_is_valid_and_every_entry_is_sourced() -> None:
    assert len({p.name for p in ENTRIES}) == len(ENTRIES) >= 5
    for p in ENTRIES:
        assert p.source.paper and p.source.where and p.source.url.startswith("https://")
    pre = {p.model: p for p in ENTRIES if p.method == "pre-attention expert router"}
    # arXiv 2511.10676 abstract: 93.03 % / 94.69 % exact match.
    assert pre["DeepSeek-V2-Lite"].accuracy == 0.9303 and pre["DeepSeek-V2-Lite"].top_k == 6
    assert pre["Qwen3-30B-A3B"].accuracy == 0.9469 and pre["Qwen3-30B-A3B"].metric == "exact_match"
    assert any(p.method == "Pre-gated MoE" for p in ENTRIES)


@pytest.mark.parametrize("model", ["deepseek_v2_lite", "qwen3_30b_a3b"])
def test_at_least_three_priced_points_with_sources_per_model(model: str) -> None:
    spec = load_model_spec(model)
    points = published_points(spec, gpu(), 2048)
    priced = [p for p in points if p["overhead"] is not None]
    assert len(priced) >= 3
    assert sum(p["same_model"] for p in points) >= 1  # the pre-attention router on this model
    blocks = published_blocks(points)
    table = next(b for b in blocks if isinstance(b, Table))
    assert len(table.rows) == len(points) and all(row[-1] for row in table.rows)
    assert "published, not measured here" in render_markdown(blocks, Path("."))


def test_selection_prefers_the_run_model_per_method() -> None:
    names = {p.name for p in select_for_model(ENTRIES, "DeepSeek-V2-Lite")}
    assert "pre_attention_router/DeepSeek-V2-Lite" in names
    assert "pre_attention_router/Qwen3-30B-A3B" not in names  # same method, other model
    assert "pre_gated_moe/SwitchTransformer" in names  # method only published elsewhere
    mixtral = {p.name for p in select_for_model(ENTRIES, "Mixtral-8x7B")}
    assert {"pre_attention_router/DeepSeek-V2-Lite", "pre_attention_router/Phi-mini-MoE"} <= mixtral


def test_metric_conversions() -> None:
    by_name = {p.name: p for p in ENTRIES}
    low, high = by_name["pre_attention_router/DeepSeek-V2-Lite"].topk_hit_range()
    # Exact match a = 0.9303 with k = 6: every missed (token, layer) still has <= 5 of 6 right.
    assert low == 0.9303 and high == pytest.approx(0.9303 + 0.0697 * 5 / 6)
    assert by_name["specprefetch/DeepSeek-VL2-Tiny"].topk_hit_range() == (0.8961, 0.8961)
    assert by_name["moe_beyond/DeepSeek-V2-Lite"].topk_hit_range() == (0.866, 0.866)
    assert by_name["pre_gated_moe/SwitchTransformer"].topk_hit_range() == (1.0, 1.0)
    # MoE-Beyond's two published figures agree under exactly-k prediction: per-expert accuracy
    # 1 - 2k(1 - F1)/E with k = 6, E = 64.
    beyond = by_name["moe_beyond/DeepSeek-V2-Lite"]
    per_expert = 1 - 2 * 6 * (1 - beyond.accuracy) / 64
    assert per_expert == pytest.approx(beyond.other_figures["per_expert_accuracy"], abs=5e-4)


def test_overhead_is_priced_from_the_shapes_on_the_run_model() -> None:
    spec = load_model_spec("deepseek_v2_lite")  # d = 2048, E = 64, top-6, 26 MoE layers
    point = next(p for p in published_points(spec, gpu(), 1000)
                 if p["name"] == "pre_gated_moe/SwitchTransformer")  # fmt: skip
    assert point["widths"] == [2048, 64]
    t, d, e, k = 1000, 2048, 64, 6
    flops = 2 * t * d * e  # 2.62e8 FLOPs -> 0.26 us at 1e15 FLOP/s
    bytes_ = t * (2 * (d + 2 * e) + 2 * k) + 2 * (d * e + e)  # 4.36e6 + 0.26e6 B -> 4.62 us
    assert point["overhead"]["flops_per_batch"] == 26 * flops
    assert point["overhead"]["bytes_per_batch"] == 26 * bytes_
    assert point["overhead_s_per_layer"] == pytest.approx(bytes_ / 1e12 + 1e-6)  # + 1 launch


def test_place_reads_the_whatif_sweep() -> None:
    guide = {"accuracy": [0.5, 1.0], "overhead_s": [0.0], "token_speedup": [[1.0, 2.0]],
             "distribution_speedup": 1.5}  # fmt: skip
    point = {"topk_hit_rate": 0.75, "overhead_s_per_layer": 0.001}
    # baseline 1 s: step 1 s at a=0.5, 0.5 s at a=1 -> 0.75 s at a=0.75, + 0.001 s x 10 layers.
    out = place(point, guide, baseline_s=1.0, moe_layers=10)
    assert out["speedup_estimate"] == pytest.approx(1 / 0.76)
    assert out["beats_distribution"] is False
    assert place({**point, "topk_hit_rate": 0.4}, guide, 1.0, 10)["speedup_estimate"] is None
    unpriced = place({**point, "overhead_s_per_layer": None}, guide, 1.0, 10)
    assert unpriced["beats_distribution"] is None


@pytest.mark.parametrize("model", ["qwen3_30b_a3b", "mixtral_8x7b", "olmoe_1b_7b"])
def test_frontier_plot_draws_published_points(tmp_path: Path, model: str, monkeypatch) -> None:
    """Each published point with a priced overhead is a triangle at (its top-k hit rate, its
    overhead in us per layer), numbered and named in the legend; no label runs into the title,
    and everything stays inside the figure (Mixtral's three high-overhead points once wrote
    their names over the title)."""
    import gps.report.plots as plots

    speed = [[0.9, 1.1, 1.2], [0.8, 1.0, 1.1]]
    guide = {"accuracy": [0.5, 0.9, 1.0], "overhead_s": [0.0, 1e-4], "token_speedup": speed,
             "distribution_speedup": 1.0}  # fmt: skip
    points = published_points(load_model_spec(model), gpu(), 2048)
    priced = [p for p in points if p["overhead_s_per_layer"] is not None]
    seen = {}
    save = plots._save

    def measure(fig, path):  # lay the figure out as it is written, then measure it
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen.update(
            offsets=[c.get_offsets().tolist() for c in ax.collections],
            numbers=[t.get_text() for t in ax.texts],
            names=[t.get_text() for t in legend.get_texts()],
            title=ax.title.get_window_extent(renderer),
            labels=[t.get_window_extent(renderer) for t in ax.texts],
            legend=legend.get_window_extent(renderer),
            xlabel=ax.xaxis.label.get_window_extent(renderer),
            axes=ax.get_window_extent(renderer),
            figure=fig.bbox.frozen(),
        )  # fmt: skip
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", measure)
    assert plot_frontier(guide, tmp_path / "f.png", points).stat().st_size > 0
    want = [[p["topk_hit_rate"], p["overhead_s_per_layer"] * 1e6] for p in priced]
    [triangles] = [o for o in seen["offsets"] if len(o) == len(priced)]
    np.testing.assert_allclose(triangles, want)
    assert seen["names"] == [f"{i}: {p['name']}" for i, p in enumerate(priced, 1)]
    assert seen["numbers"] == [str(i) for i in range(1, len(priced) + 1)]
    title, figure, axes = seen["title"], seen["figure"], seen["axes"]
    for box in [*seen["labels"], seen["legend"], seen["xlabel"]]:
        assert not box.overlaps(title)
    for box in [*seen["labels"], seen["legend"], title]:
        assert figure.x0 <= box.x0 and box.x1 <= figure.x1
        assert figure.y0 <= box.y0 and box.y1 <= figure.y1
    assert all(axes.y0 <= b.y0 and b.y1 <= axes.y1 for b in seen["labels"])  # inside the axes
    assert not seen["legend"].overlaps(seen["xlabel"])


def _write(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(PUBLISHED_PATH.read_text())
    edit(data["predictors"])
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e[1].update(accuracy=93.03),
         r"entry 1 \(pre_attention_router/Qwen3-30B-A3B\): field 'accuracy'"),
        (lambda e: e[0].update(metric="top1"), r"entry 0 .*field 'metric'"),
        (lambda e: e[2].pop("source"), r"entry 2 .*field 'source': missing"),
        (lambda e: e[0]["source"].pop("url"), r"field 'url': missing"),
        (lambda e: e[0]["architecture"].update(widths=["d", "h", "E"]),
         "field 'architecture.widths'"),
        (lambda e: e[0].update(bogus=1), "field 'bogus': unknown field"),
        (lambda e: e[0].update(top_k=True), "field 'top_k'"),
        (lambda e: e.append(dict(e[0])), "field 'name': duplicate"),
    ],
)  # fmt: skip
def test_bad_files_name_file_entry_and_field(tmp_path: Path, edit, message: str) -> None:
    path = _write(tmp_path, edit)
    with pytest.raises(PublishedError, match=message) as info:
        load_published(path)
    assert str(path) in str(info.value)
