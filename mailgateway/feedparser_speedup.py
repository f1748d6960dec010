"""One slow spot of the standard library's MIME parser, made fast without changing its result.

email.feedparser trims the line break before each MIME boundary (it belongs to the
boundary, RFC 2046) with `NLCRE_eol.search(payload)`, the pattern `(\\r\\n|\\r|\\n)\\Z`. A
regular-expression search tries it at every position of the part, so trimming one 20 KB
part costs about 0.1 ms: on bench/ingest.py's corpus, 15 % of our whole parse, paid for
every part of every multipart mail. A match ends at the end of the text and is at most two
characters long, so it can only start in the last two: searching from there finds the
same match (tests/test_feedparser_speedup.py compares both on every kind of ending).
Installed once, when parse.py is imported; it changes nothing but the time taken.
"""

from __future__ import annotations

import email.feedparser
import re


class _LineBreakAtEnd:
    """Stands in for feedparser's NLCRE_eol, whose only use there is search(text)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> re.Match[str] | None:
        end = len(text) if endpos is None else min(endpos, len(text))
        return self.pattern.search(text, max(pos, end - 2), end)

    def __getattr__(self, name: str) -> object:  # anything else: the pattern itself
        return getattr(self.pattern, name)


def install() -> None:
    """Idempotent: a second import (or a test) finds it in place."""
    if not isinstance(email.feedparser.NLCRE_eol, _LineBreakAtEnd):
        email.feedparser.NLCRE_eol = _LineBreakAtEnd(email.feedparser.NLCRE_eol)
