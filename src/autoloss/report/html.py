"""A self-contained HTML page: headings, tables, notes and figures embedded as base64 PNGs.

The page needs no other file (no scripts, no external styles), so ``report.html`` can be mailed or
attached as it is.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from autoloss.files import write_text

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), th { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; background: #f8f8f0; border-left: 3px solid #cc9; padding: 0.4em 0.8em; }
li { margin: 0.3em 0; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


class HtmlPage:
    """Build a page section by section, then :meth:`write` it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{_inline(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{_inline(text)}</p>')

    def bullets(self, items: Sequence[str]) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, png: Path, alt: str) -> None:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        self.parts.append(
            f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></p>'
        )

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        write_text(path, self.render(), what="the report")
        return path


def _inline(text: str) -> str:
    """Escape, then render the two bits of markdown the tables use: **bold** and `code`."""
    out = html.escape(text)
    while out.count("**") >= 2:
        out = out.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while out.count("`") >= 2:
        out = out.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return out
