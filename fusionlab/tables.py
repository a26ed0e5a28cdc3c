"""Tables as text: the one Markdown, HTML and CSV writer for the tables fusionlab prints or saves.

Cells are shown with `str` (format numbers before); a Markdown cell `**x**` is bold in HTML too."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; cells are shown with `str` (format numbers before)."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def html_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """An HTML <table>; cells are escaped, and `**x**` becomes bold."""
    import html

    def cell(value, tag: str) -> str:
        text = str(value)
        bold = len(text) > 4 and text.startswith("**") and text.endswith("**")
        inner = html.escape(text[2:-2] if bold else text)
        return f"<{tag}>{'<b>' + inner + '</b>' if bold else inner}</{tag}>"

    head = "".join(cell(c, "th") for c in header)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV with a header row and Unix line ends."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
