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
