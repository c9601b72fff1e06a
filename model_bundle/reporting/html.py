"""A small HTML builder. Every piece of text is escaped: :class:`_Html` marks the only strings
that are not (markup built here from escaped parts), so a feature name, a failure reason
or a manifest field can never inject markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

from model_bundle.reporting.text import _metric_text

# --------------------------------------------------------------------------- HTML building


class _Html(str):
    """Markup built here from escaped parts: :func:`_esc` leaves it unchanged."""

    __slots__ = ()


def _esc(value: object) -> _Html:
    """``value`` as HTML text: escaped, unless it already is :class:`_Html`."""
    if isinstance(value, _Html):
        return value
    return _Html(html.escape(str(value), quote=True))


def _tag(name: str, *content: object, **attrs: str) -> _Html:
    """``<name attrs>content</name>``; ``class_`` stands for ``class``."""
    attributes = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{html.escape(value, quote=True)}"'
        for key, value in attrs.items()
    )
    return _Html(f"<{name}{attributes}>{''.join(_esc(c) for c in content)}</{name}>")


def _join(parts: Iterable[object]) -> _Html:
    return _Html("".join(_esc(p) for p in parts))


def _table(
    header: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
    highlight: Iterable[int] = (),
) -> _Html:
    """A table; every cell is escaped unless it is :class:`_Html`."""
    marked = set(highlight)
    body = _join(
        _tag("tr", *(_tag("td", c) for c in row), **({"class_": "hl"} if i in marked else {}))
        for i, row in enumerate(rows)
    )
    return _tag(
        "table",
        _tag("caption", caption) if caption else "",
        _tag("thead", _tag("tr", *(_tag("th", h) for h in header))),
        _tag("tbody", body),
    )


def _section(anchor: str, title: str, *content: object) -> _Html:
    return _tag("section", _tag("h2", title), *content, id=anchor)


def _note(text: object) -> _Html:
    return _tag("p", text, class_="note")


def _figure(png: str, alt: str, caption: str) -> _Html:
    # The image is a data: URI, so the file needs nothing from anywhere else.
    img = _Html(f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt, quote=True)}">')
    return _tag("figure", img, _tag("figcaption", caption))


def _with_counts(metric: object) -> _Html:
    """A metric cell: estimate (CI) and, in grey, its numerator/denominator."""
    text = _metric_text(metric)
    if isinstance(metric, Mapping) and metric.get("denominator"):
        counts = f"{metric.get('numerator')}/{metric.get('denominator')}"
        return _join([text, " ", _tag("span", counts, class_="n")])
    return _esc(text)
