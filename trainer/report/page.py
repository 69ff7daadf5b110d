"""The HTML pages of our outputs (tv-train's report.html, tv-audit's audit.html): one style,
one page shell and one table, and the sections later commands add to report.html.

Plain HTML with relative links to the files beside it, so an output folder can be copied or
served as it is; no template engine, every value escaped.
"""

from __future__ import annotations

import html
import os
from typing import Sequence

from beam_jobs.runs.atomic import write_text

REPORT_FILE = "report.html"  # tv-train's page; tv-train --tune and tv-audit add sections
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"""


def html_page(title: str, extra_style: str, body: str) -> str:
    """A whole page: the shared style (plus the page's own rules), the title as its heading."""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}{extra_style}</style></head><body><h1>{title}</h1>{body}"
            f"</body></html>\n")


def table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def add_section(model_dir: str, name: str, fragment: str) -> str:
    """Put `fragment` into report.html before `</body>`, replacing an earlier section of the
    same name (so re-running `tv-audit --model_dir` does not stack copies); returns the path."""
    path = os.path.join(model_dir, REPORT_FILE)
    with open(path, encoding="utf-8") as f:
        page = f.read()
    begin, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    if begin in page and end in page:
        page = page[:page.index(begin)] + page[page.index(end) + len(end):]
    page = page.replace("</body>", f"{begin}{fragment}{end}</body>", 1)
    write_text(path, page)
    return path
