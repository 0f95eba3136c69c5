"""The docs say what the code does: the README's settings table is generated from the settings
models, and every RAG_* variable the README mentions exists."""

from __future__ import annotations

import re
from pathlib import Path

from settings_doc import BEGIN, END, rows, table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_settings_table_matches_the_code() -> None:
    text = (ROOT / "README.md").read_text()
    current = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert current == table(), "README settings table is stale: run scripts/settings_doc.py --write README.md"


def test_every_setting_has_a_description() -> None:
    undocumented = [var for var, _, meaning in rows() if not meaning]
    assert undocumented == []


def test_every_rag_variable_named_in_docs_exists() -> None:
    known = {var for var, _, _ in rows()}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "RUNBOOK.md"]:
        if not doc.exists():
            continue
        named = set(re.findall(r"\bRAG_[A-Z0-9_]+__[A-Z0-9_]+\b", doc.read_text()))
        assert named - known == set(), f"{doc.name} names settings that do not exist"
