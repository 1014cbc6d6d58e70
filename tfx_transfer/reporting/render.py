"""Writing reports: Markdown and one self-contained HTML page with plots embedded as PNG.

No external asset, script or font: the HTML opens offline in any browser and prints cleanly.
Files are written by `tfx_transfer.runs.folder` (atomically).
"""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np

from tfx_transfer.config.settings import image_shape

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1060px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #d0d0d0;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{background:#eef6ee;border-left:4px solid #3a8a3a;padding:.6em 1em;margin:1em 0}
.note{color:#555;font-size:.9em}img{max-width:100%;height:auto}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery figure{margin:0;width:140px;font-size:.78em}
.gallery img{width:140px;height:140px;object-fit:contain;background:#222}
@media print{body{max-width:none;margin:0}h2{page-break-after:avoid}img,table,figure{page-break-inside:avoid}}
"""


def figure_to_data_uri(figure) -> str:
    """A matplotlib figure as an inline `data:image/png;base64,...` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_to_data_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(path, side: int = 160) -> str | None:
    """An image file as a thumbnail data URI (at most `side` pixels), or None when it is gone or unreadable."""
    from pathlib import Path

    from PIL import Image

    from tfx_transfer.data.images import read_image

    if not path or not Path(path).is_file():
        return None
    try:
        pixels = read_image(path)
    except (OSError, ValueError):
        return None
    thumbnail = Image.fromarray(pixels)
    thumbnail.thumbnail((side, side))
    return image_to_data_uri(np.asarray(thumbnail))


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def html_table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{css}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(str(cell) for cell in header) else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*|<>~]|\](?=\())|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown_text(value) -> str:
    """`value` as literal Markdown text: a class named `*scratch*`, `a|b` or `<b>` prints as written.

    Underscores inside a word stay as they are (they never emphasise there); line breaks become spaces.

    Example:
        >>> print(markdown_text("*bad* | speed_limit_20"))
        \\*bad\\* \\| speed_limit_20
    """
    text = " ".join(str(value).splitlines())
    return _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), text)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(map(markdown_text, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """A complete page: `sections` are `(heading, inner HTML)`; an empty heading adds no h2."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class=\"note\">{html.escape(subtitle)}</p>")
    for heading, inner in sections:
        if heading:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(inner)
    parts.append("</body></html>")
    return "\n".join(parts)


def html_image(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def paragraph(text: str, css: str = "") -> str:
    return f'<p{f" class={chr(34)}{css}{chr(34)}" if css else ""}>{html.escape(text)}</p>'


def image_size_text(image_size) -> str:
    """`96x96 px` from run.json's `(height, width)` (or the side of a square, as older runs recorded it)."""
    height, width = image_shape(image_size)
    return f"{height}x{width} px"
