"""The schema's idea of a blank string is the server's: the whitespace class spelled out in
app/schemas.py is exactly what Python's str.isspace() (and so the trimming of q) calls blank, so
a client validating against the published schema gets the server's answer (schemathesis found
"\\u0085" accepted by the schema's `\\S` and refused by the server)."""

from __future__ import annotations

import re

import pytest

from app.schemas import NOT_BLANK, Q_PATTERN, WS, RagRequest


def test_the_whitespace_class_is_pythons_whitespace() -> None:
    python = {c for c in range(0x110000) if chr(c).isspace()}
    spelled = {c for c in range(0x110000) if re.fullmatch(f"[{WS}]", chr(c))}
    assert spelled == python


@pytest.mark.parametrize("text", ["\x85", "\x1c\x1d", " \u3000\t", "\u2028"])
def test_blank_by_the_schema_is_blank_for_the_server(text: str) -> None:
    assert not re.search(NOT_BLANK, text) and not re.fullmatch(Q_PATTERN, text)
    with pytest.raises(ValueError, match="blank"):
        RagRequest(q=text)


@pytest.mark.parametrize("text", ["\ufeff", "a", " \x85x\x85 "])
def test_not_blank_by_the_schema_is_accepted(text: str) -> None:
    assert re.fullmatch(Q_PATTERN, text)
    assert RagRequest(q=text).q
