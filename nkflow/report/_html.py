"""Small HTML building blocks for the report pages.

Contract: every function here is pure and returns a ``str`` of HTML. Every piece of text that
comes from data is escaped with :func:`esc`; nothing here reads files except
:func:`template`, which reads package data from ``nkflow/templates/``. No network resources
are ever referenced: pages are self-contained.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from string import Template

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
$css
</style>
</head>
<body>
<header class="top"><h1>$heading</h1>$nav</header>
<main>
$body
</main>
$script
</body>
</html>
"""
)


#: plain cells up to this many characters never wrap (ids, dates, codes stay on one line)
NOWRAP_MAX = 24


def esc(value: object) -> str:
    """Escape ``value`` (converted with ``str``) for HTML text and attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def template(name: str) -> str:
    """Return the text of package data file ``nkflow/templates/<name>``."""
    return resources.files("nkflow").joinpath("templates", name).read_text(encoding="utf-8")


def page(title: str, heading: str, nav: str, body: str, script: str = "") -> str:
    """Assemble a complete self-contained HTML page (CSS inlined, optional inline script)."""
    return _PAGE.substitute(
        title=esc(title),
        heading=heading,
        nav=nav,
        css=template("report.css"),
        body=body,
        script=f"<script>\n{script}\n</script>" if script else "",
    )


def section(anchor: str, title: str, content: str) -> str:
    """A titled ``<section>`` with an ``id`` for in-page navigation."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{content}\n</section>'


def details(summary: str, content: str, open_: bool = False) -> str:
    """A collapsed (or open) ``<details>`` block; ``summary`` is escaped."""
    attr = " open" if open_ else ""
    return f"<details{attr}><summary>{esc(summary)}</summary>\n{content}\n</details>"


def badge(text: str, kind: str = "flag") -> str:
    """An inline badge; ``kind`` selects the CSS class (PASS, FAIL, WARN, borderline, flag)."""
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def note(text: str) -> str:
    """A muted explanatory paragraph (``text`` escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def is_number(text: str) -> bool:
    """True when ``text`` parses as a finite or infinite float (used only for alignment)."""
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    raw_columns: Iterable[int] = (),
    css_class: str = "",
    table_id: str = "",
    sort_keys: Mapping[int, Sequence[str]] | None = None,
    numeric_columns: Iterable[int] = (),
) -> str:
    """Render a table.

    Parameters
    ----------
    columns
        Header texts (escaped).
    rows
        Cell texts; escaped unless the column index is in ``raw_columns`` (trusted HTML).
    raw_columns
        Column indices whose cells are already HTML.
    css_class, table_id
        Optional ``class`` and ``id`` attributes.
    sort_keys
        Column index -> per-row ``data-sort`` values (for the inline sort script).
    numeric_columns
        Column indices marked ``data-type="num"`` in the header (numeric sort).

    Returns
    -------
    str
        The ``<table>`` wrapped in a horizontally scrolling ``<div>``.
    """
    raw = set(raw_columns)
    numeric = set(numeric_columns)
    keys = sort_keys or {}
    attrs = ""
    if css_class:
        attrs += f' class="{esc(css_class)}"'
    if table_id:
        attrs += f' id="{esc(table_id)}"'
    head = "".join(
        f'<th data-type="num">{esc(c)}</th>' if i in numeric else f"<th>{esc(c)}</th>"
        for i, c in enumerate(columns)
    )
    body_rows = []
    for r_i, row in enumerate(rows):
        cells = []
        for c_i, cell in enumerate(row):
            text = cell if c_i in raw else esc(cell)
            cls = ""
            if c_i not in raw and is_number(str(cell)):
                cls = ' class="num"'
            elif c_i not in raw and len(str(cell)) <= NOWRAP_MAX:
                cls = ' class="nw"'

            sort = ""
            if c_i in keys:
                sort = f' data-sort="{esc(keys[c_i][r_i])}"'
            cells.append(f"<td{cls}{sort}>{text}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body_rows)
        + "\n</tbody></table></div>"
    )


def key_value_table(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (name, value) pairs, both escaped."""
    return table(["item", "value"], [[k, v] for k, v in pairs])


def img(data_uri: str, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with an embedded image (``data:`` URI) and optional caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(data_uri)}" alt="{esc(alt)}">{cap}</figure>'
