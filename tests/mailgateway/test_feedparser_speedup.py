"""The feedparser speed-up finds what the stock pattern finds, and parses mail the same."""

from __future__ import annotations

import email
import email.feedparser
import itertools
from pathlib import Path

import pytest

import mailgateway.parse  # noqa: F401 -- installs the speed-up, as the gateway does
from mailgateway.feedparser_speedup import _LineBreakAtEnd, install

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
FAST = email.feedparser.NLCRE_eol
STOCK = FAST.pattern


def test_it_is_installed_once() -> None:
    install()
    assert isinstance(email.feedparser.NLCRE_eol, _LineBreakAtEnd)
    assert email.feedparser.NLCRE_eol.pattern is STOCK  # not a wrapper of a wrapper


def _texts() -> list[str]:
    """Every text of up to four characters from the characters that matter, and long ones."""
    pieces = ["a", "\r", "\n", " "]
    short = ["".join(p) for n in range(5) for p in itertools.product(pieces, repeat=n)]
    return short + ["x" * 20000 + "\r\n", "line\n" * 4000, "x" * 20000, "\n" * 3 + "y"]


@pytest.mark.parametrize("text", _texts())
def test_the_same_match_as_the_stock_pattern(text: str) -> None:
    for found, expected in ((FAST.search(text), STOCK.search(text)),
                            (FAST.search(text, 1, len(text) - 1),
                             STOCK.search(text, 1, len(text) - 1))):
        assert (found and (found.span(), found.group(0))) == (
            expected and (expected.span(), expected.group(0)))


def _tree(message: email.message.Message) -> list[tuple]:
    return [(part.get_content_type(), part.preamble, part.epilogue,
             None if part.is_multipart() else part.get_payload(),
             [type(defect).__name__ for defect in part.defects])
            for part in message.walk()]


def test_every_fixture_parses_as_with_the_stock_parser(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """The whole corpus of real-shaped mail, CRLF and LF, multipart to four levels."""
    raws = [path.read_bytes() for path in sorted(CORPUS.rglob("*.eml"))]
    raws += [raw.replace(b"\n", b"\r\n") for raw in raws if b"\r\n" not in raw]
    assert sum(b"multipart/" in raw for raw in raws) > 20
    fast = [_tree(email.message_from_bytes(raw)) for raw in raws]
    monkeypatch.setattr(email.feedparser, "NLCRE_eol", STOCK)
    assert fast == [_tree(email.message_from_bytes(raw)) for raw in raws]
