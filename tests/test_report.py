"""Report rendering (Markdown/HTML from one block list), sweep aggregation, the guideline maths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gps.advisor.guidelines import crossover, frontier
from gps.report.cli import main as report_main
from gps.report.document import Code, Heading, Para, Table, render_html, render_markdown
from gps.report.sweep import find_runs


def test_markdown_and_html_say_the_same(tmp_path: Path) -> None:
    blocks = [Heading("T", 1), Para("**bold** and `code` <x>"), Table(["a", "b"], [["1", "2"]]),
              Code("gps model=x")]  # fmt: skip
    md = render_markdown(blocks, tmp_path)
    assert md.splitlines()[:1] == ["# T"] and "| a | b |" in md and "| 1 | 2 |" in md
    html = render_html(blocks, "T")
    assert "<b>bold</b>" in html and "<code>code</code>" in html and "&lt;x&gt;" in html
    assert "<td>1</td><td>2</td>" in html and "<pre>gps model=x</pre>" in html


def test_crossover_interpolates_and_says_never() -> None:
    acc = np.array([0.5, 0.75, 1.0])
    # speed-up 1.0 at 0.5, 1.2 at 0.75: 1.1 is reached half way, at 0.625
    assert crossover(acc, np.array([1.0, 1.2, 1.4]), 1.1) == pytest.approx(0.625)
    assert crossover(acc, np.array([1.0, 1.2, 1.4]), 0.9) == 0.5
    assert crossover(acc, np.array([1.0, 1.2, 1.4]), 1.5) is None
    assert crossover(acc, np.array([1.0, 1.0, 1.0]), 1.0) is None  # a tie is no win


def test_frontier_adds_overhead_per_layer() -> None:
    # step 10 s at every accuracy, baseline 20 s -> 2x; 1 s/layer x 10 layers -> 20 s -> 1x
    guide = frontier(lambda a: 10.0, [1.0, 0.5], [1.0, 0.0], 10, 20.0, 1.5)
    assert guide["accuracy"] == [0.5, 1.0] and guide["overhead_s"] == [0.0, 1.0]
    assert guide["token_speedup"] == [[2.0, 2.0], [1.0, 1.0]]
    assert guide["crossover_accuracy"] == [0.5, None]
    with pytest.raises(ValueError, match="accuracy_grid"):
        frontier(lambda a: 1.0, [1.5], [0.0], 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="overhead_grid_us"):
        frontier(lambda a: 1.0, [0.5], [-1.0], 1, 1.0, 1.0)


def test_sweep_statuses(tmp_path: Path) -> None:
    for job in ("0", "1", "2"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
    (tmp_path / "1" / "error.json").write_text(json.dumps({"error": "boom"}))
    (tmp_path / "2" / "results.json").write_text("{ half-writ")
    runs = {r.path.name: r for r in find_runs(tmp_path)}
    assert runs["0"].status == "missing" and runs["0"].overrides == ["seed=0"]
    assert runs["1"].status == "failed" and runs["1"].error == "boom"
    assert runs["2"].status == "failed" and "unreadable" in runs["2"].error


def test_report_cli_bad_folder(tmp_path: Path, capsys) -> None:
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "no such sweep folder" in capsys.readouterr().err


# A published-predictors-like table: long unbroken identifiers and a prose source column, the
# shape that held a 1280-px window's table 120 px past the page's edge.
_SOURCE = (
    "Zhu, Bohl, Oester, Alonso: Pre-Attention Expert Prediction and Prefetching for "
    "Mixture-of-Experts Large Language Models, arXiv 2511.10676; abstract ('93.03% "
    "accuracy on DeepSeek V2 Lite'); summary on sciencestack.ai/paper/2511.10676 (2025)"
)
_WIDE = Table(
    ["predictor", "published on", "published figure", "top-k hit (ours)",
     "architecture priced", "us/layer", "est. speed-up", "source"],
    [[f"pre_attention_router/DeepSeek-V2-Lite-{i}", "DeepSeek V2 Lite (other model)",
      "exact_match 0.930", "0.930 - 0.988", "4096x4096x8", "872.5", "0.945x (loses)", _SOURCE]
     for i in range(4)],
)  # fmt: skip


def test_html_cells_wrap_long_text_and_identifiers() -> None:
    page = render_html([_WIDE], "t")
    assert page.count('<td class="long">') == 4  # the source cells
    assert "pre_<wbr>attention_<wbr>router/<wbr>DeepSeek-V2-Lite-0" in page
    assert '<div class="table"><table>' in page  # a table that cannot fit scrolls in its box


def _chromium() -> str | None:
    import shutil

    return next((p for n in ("chromium-headless-shell", "chromium", "google-chrome")
                 if (p := shutil.which(n))), None)  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="no headless chromium on this machine "
                    "(apt-get install chromium-headless-shell)")  # fmt: skip
def test_html_report_tables_fit_a_1280_px_window(tmp_path: Path) -> None:
    """Rendered by headless chromium at 1280 px: no table reaches past the page body and the
    page does not scroll sideways."""
    import re
    import subprocess

    probe = (
        "<script>window.addEventListener('load', () => {"
        "const r = Math.max(...[...document.querySelectorAll('table')]"
        ".map(t => t.getBoundingClientRect().right));"
        "document.title = 'layout ' + [document.documentElement.scrollWidth,"
        "document.documentElement.clientWidth, Math.round(r),"
        "Math.round(document.body.getBoundingClientRect().right)].join(' ');});</script>"
    )
    page = render_html([Heading("Published predictors"), _WIDE], "t")
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
         "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    scroll, viewport, table_right, body_right = map(
        int, re.search(r"<title>layout (\d+) (\d+) (\d+) (\d+)</title>", dom).groups()
    )
    assert scroll <= viewport and table_right <= body_right
