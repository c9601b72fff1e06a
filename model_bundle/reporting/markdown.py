"""Markdown in both directions: escaping text for the model card, and the small converter
that renders what :func:`~model_bundle.reporting.model_card` writes (headings,
paragraphs, lists, block quotes, tables, bold, code) as HTML and escapes everything else.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Final

from model_bundle.reporting.html import _Html


def _md(text: object) -> str:
    """Plain text for Markdown: punctuation that Markdown or HTML would read is escaped.

    A failure reason or a feature name may hold ``<``, ``|`` or ``*``; in the card they
    must stay text for any Markdown renderer (which would pass raw HTML through).
    """
    out = str(text).replace("\r", " ").replace("\n", " ")
    return "".join("\\" + c if c in _MD_ESCAPABLE else c for c in out)


_MD_ESCAPABLE: Final = "\\`*_[]<>&|#"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table; cells are escaped with :func:`_md`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- Markdown


_INLINE: Final = re.compile(r"\\([" + re.escape(_MD_ESCAPABLE) + r"])|`([^`]*)`|\*\*(.+?)\*\*")


def _md_inline(text: str) -> _Html:
    """Inline Markdown (backslash escapes, code, bold) to escaped HTML."""
    parts: list[str] = []
    pos = 0
    for match in _INLINE.finditer(text):
        parts.append(html.escape(text[pos : match.start()]))
        if match.group(1) is not None:
            parts.append(html.escape(match.group(1)))
        elif match.group(2) is not None:
            parts.append(f"<code>{html.escape(match.group(2))}</code>")
        else:
            parts.append(f"<strong>{_md_inline(match.group(3))}</strong>")
        pos = match.end()
    parts.append(html.escape(text[pos:]))
    return _Html("".join(parts))


def _md_cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", body)]


def _markdown_html(markdown: str, *, shift: int = 2) -> _Html:
    """The subset of Markdown :func:`model_card` writes, as escaped HTML.

    Headings (shifted down by ``shift`` levels to nest in the report), paragraphs,
    ``-`` lists, ``>`` block quotes and pipe tables; anything else is a paragraph.
    """
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            i += 1
        elif heading:
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{_md_inline(heading.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_md_cells(b) for b in block if not re.fullmatch(r"\|?[\s:|-]+\|?", b.strip())]
            if rows:
                head = "".join(f"<th>{_md_inline(c)}</th>" for c in rows[0])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in row) + "</tr>"
                    for row in rows[1:]
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif re.match(r"^[-*]\s+", stripped):
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i].strip()):
                items.append(re.sub(r"^[-*]\s+", "", lines[i].strip()))
                i += 1
                # Indented continuation lines belong to the item.
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    items[-1] += " " + lines[i].strip()
                    i += 1
            out.append("<ul>" + "".join(f"<li>{_md_inline(t)}</li>" for t in items) + "</ul>")
        elif stripped.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quoted.append(lines[i].strip()[1:].strip())
                i += 1
            out.append(f"<blockquote><p>{_md_inline(' '.join(quoted))}</p></blockquote>")
        else:
            paragraph = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"^(#{1,6}\s|\||[-*]\s|>)", lines[i].strip())
            ):
                paragraph.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_md_inline(' '.join(paragraph))}</p>")
    return _Html("\n".join(out))
