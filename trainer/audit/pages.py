"""The "Data quality" pages: counts, then thumbnail grids people can scan in a minute.

The grids show the most suspicious labels (given vs suggested), the cross-split near
duplicates side by side, and the most isolated images.  Thumbnails are small PNGs embedded as
data URIs, so `audit.html` is one self-contained file (written atomically like the CSVs); an
image that cannot be read back (a deleted file, a `file.tfrecord#17` uri) gets a grey tile
with its uri.  The same section goes into a model's report.html when `--model_dir` is given.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Optional

import numpy as np

from trainer.report.page import STYLE, html_page

THUMB_PIXELS = 96
LABEL_ISSUES_SHOWN = 24
DUPLICATES_SHOWN = 12
OUTLIERS_SHOWN = 12

_GRID_STYLE = """
.grid{display:flex;flex-wrap:wrap;gap:8px}.tile{width:200px;font-size:12px;
overflow-wrap:anywhere}.tile img,.missing{width:96px;height:96px;image-rendering:pixelated;
border:1px solid #ddd}.missing{display:inline-block;background:#ddd;color:#666;
font-size:10px;text-align:center;line-height:96px}.pair{width:210px}"""

Tile = tuple[str, str]  # (uri, caption)


def thumbnail_tag(pixels: Optional[np.ndarray], uri: str) -> str:
    """An <img> with the image as an embedded PNG, or a grey placeholder when unreadable."""
    if pixels is None:
        return f'<span class="missing" title="{html.escape(uri)}">no image</span>'
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, np.uint8))
    image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(uri)}">'


def _grid(tiles: Sequence[Sequence[Tile]], load: Callable[[str], Optional[np.ndarray]],
          css: str = "tile") -> str:
    if not tiles:
        return "<p>none</p>"
    cells = []
    for group in tiles:
        pictures = "".join(thumbnail_tag(load(uri), uri) for uri, _ in group)
        captions = "<br>".join(html.escape(caption) for _, caption in group)
        cells.append(f'<div class="{css}">{pictures}<br>{captions}</div>')
    return f'<div class="grid">{"".join(cells)}</div>'


def _counts(summary: dict) -> str:
    rows = [("examples", summary["examples"]),
            ("examples per split", ", ".join(f"{s} {n}" for s, n in summary["splits"].items())),
            ("label issues flagged", summary["label_issues"]["flagged"]),
            ("near-duplicate pairs", summary["near_duplicates"]["pairs"]),
            ("… across splits (leakage)", summary["near_duplicates"]["cross_split"]),
            ("… with different labels", summary["near_duplicates"]["label_mismatch"]),
            ("outliers flagged", summary["outliers"]["flagged"])]
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def data_quality_section(summary: dict, grids: Mapping[str, Sequence[Sequence[Tile]]],
                         load: Callable[[str], Optional[np.ndarray]], heading: str = "h2") -> str:
    """The section: counts, then one grid per finding."""
    sub = "h3" if heading == "h2" else "h4"
    return (f"<{heading}>Data quality</{heading}>{_counts(summary)}"
            f"<{sub}>Most likely label errors (given → suggested, label quality)</{sub}>"
            f"{_grid(grids['label_issues'], load)}"
            f"<{sub}>Near duplicates across splits (kept · copy)</{sub}>"
            f"{_grid(grids['cross_split'], load, 'tile pair')}"
            f"<{sub}>Outliers (mean cosine distance to the nearest images)</{sub}>"
            f"{_grid(grids['outliers'], load)}")


def audit_page(section: str, summary: dict) -> str:
    files = ", ".join(f'<a href="{name}">{name}</a>' for name in summary["files"])
    return html_page("Data audit", _GRID_STYLE,
                     f"<p>Runs: {html.escape(', '.join(summary['runs']))}; backbone "
            f"{html.escape(summary['backbone'])}.</p>{section}<p>Files: {files}.</p>")


def styled_section(section: str) -> str:
    """The section with its own styles, for pages (report.html) that lack them."""
    return f"<style>{STYLE.split('}', 1)[1]}{_GRID_STYLE}</style>{section}"
