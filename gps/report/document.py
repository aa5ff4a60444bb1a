"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Both renderings come from the same blocks, so the two files always say the same thing. HTML
embeds every image as a base64 data URI: the page can be mailed or attached as one file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Para | Table | Image | Code


def _cell(text: str) -> str:
    """A Markdown table cell: ``|`` escaped, newlines folded."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown text; image links relative to ``base`` (the report's folder)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(f"{b.text}\n")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(map(_cell, b.header)) + " |")
            out.append("|" + "|".join(" --- " for _ in b.header) + "|")
            out.extend("| " + " | ".join(map(_cell, row)) + " |" for row in b.rows)
            out.append("")
        elif isinstance(b, Image):
            rel = Path(b.path).resolve().relative_to(base.resolve())
            out.append(f"![{b.caption}]({rel.as_posix()})\n")
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then turn Markdown ``**bold**`` and ``code`` spans into HTML."""
    parts = html.escape(text).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    text = "".join(parts)
    bold = text.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<b>{bold[i]}</b>"
    return "".join(bold)


# Tables fit the page. Long cells (prose: sources, notes) break anywhere and read left-aligned;
# identifiers offer a break after '/' and '_' (<wbr>); short cells (numbers, names) never break
# mid-word. So a table's narrowest layout fits the page: a 1280-px window once held the
# published-predictors table's source column 200 px past its edge. A table that still cannot
# fit scrolls inside its own box instead of widening the page.
_LONG_CELL = 40  # characters
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;"
    "color:#222}.table{overflow-x:auto;margin:1em 0}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}td.long{text-align:left;min-width:16em;"
    "overflow-wrap:anywhere}img{max-width:100%}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}"
    "figure{margin:1em 0}figcaption{color:#555;font-size:.9em}"
)


def _td(text: str) -> str:
    """One ``<td>``: breakable after ``/`` and ``_``; a long cell wraps anywhere."""
    inner = _inline(text).replace("/", "/<wbr>").replace("_", "_<wbr>")
    if len(text) > _LONG_CELL:
        return f'<td class="long">{inner}</td>'
    return f"<td>{inner}</td>"


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page (inline CSS, images as data URIs)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in b.rows)
            body.append(f'<div class="table"><table><thead><tr>{head}</tr></thead>'
                        f"<tbody>{rows}</tbody></table></div>")  # fmt: skip
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            body.append(f"<pre>{html.escape(b.text)}</pre>")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
