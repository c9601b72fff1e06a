"""A strict reader of the HTML reports the tests check (tags must nest)."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr", "source"}


class ParsedHtml(HTMLParser):
    """Tags must nest; collects tags, attributes, text and tables (by caption)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.captions: list[str] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
            self.captions.append("")
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._caption = []

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "caption" and self._caption is not None:
            self.captions[-1] = "".join(self._caption).strip()
            self._caption = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for sink in (self._cell, self._caption):
            if sink is not None:
                sink.append(data)

    def table(self, caption_start: str) -> list[list[str]]:
        for caption, rows in zip(self.captions, self.tables, strict=True):
            if caption.startswith(caption_start):
                return rows
        raise AssertionError(f"no table captioned {caption_start!r} in {self.captions}")

    def joined(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse_html(document: str) -> ParsedHtml:
    """Parse ``document``, asserting that every tag nests and closes."""
    parser = ParsedHtml()
    parser.feed(document)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser
