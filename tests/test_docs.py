"""The docs say what the code does: the README's settings table is generated from the settings
models, every RAG_* variable the docs mention exists, and every reference to a document under
docs/ (from the code or the docs) names a file that exists and, for a citation such as
`see docs/ARCHITECTURE.md, "Module map"`, a heading of that file."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel
from support.paths import ROOT

from app.settings import Settings
from scripts.settings_doc import BEGIN, END, rows, table

# docs/NAME.md, optionally followed by `, "Section"` or `, Section words`
_REF = re.compile(r"""docs/(?P<file>[\w.-]+\.md)(?:,\s*(?:"(?P<quoted>[^"\n]+)"|(?P<bare>[A-Z][\w -]*)))?""")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _norm(heading: str) -> str:
    """A heading as a citation names it: no numbering ("3. ", "3.1 "), no markup, any case."""
    heading = re.sub(r"^\d+(\.\d+)*\.?\s+", "", heading.strip())
    return re.sub(r"[`*_]", "", heading).strip().casefold()


def headings(doc: Path) -> set[str]:
    return {_norm(h) for h in _HEADING.findall(doc.read_text(encoding="utf-8"))}


def unresolved(text: str, root: Path) -> list[str]:
    """The references to docs/*.md in `text` that do not resolve under `root`: a missing file, or
    a section that is not one of the file's headings (an unquoted section may run on into the
    sentence, so it resolves when it starts with a heading)."""
    bad = []
    for m in _REF.finditer(text):
        doc = root / "docs" / m["file"]
        if not doc.is_file():
            bad.append(m[0])
            continue
        known = headings(doc)
        if m["quoted"] is not None and _norm(m["quoted"]) not in known:
            bad.append(m[0])
        elif m["bare"] is not None:
            words = _norm(m["bare"])
            if not any(words == h or words.startswith(h + " ") for h in known):
                bad.append(m[0])
    return bad


def doc_files() -> list[Path]:
    """The prose of the repository: README, RUNBOOK, the incident template and docs/*.md."""
    return [
        ROOT / "README.md",
        ROOT / "RUNBOOK.md",
        ROOT / "INCIDENT_TEMPLATE.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]


def test_readme_settings_table_matches_the_code() -> None:
    text = (ROOT / "README.md").read_text()
    current = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert current == table(), "README settings table is stale: run scripts/settings_doc.py --write README.md"


def test_every_setting_has_a_description() -> None:
    undocumented = [var for var, _, meaning in rows() if not meaning]
    assert undocumented == []


def nested_variables() -> set[str]:
    """The variables of a setting that is a group of its own (`RAG_REINDEX__NEXT_EMBEDDER__VARIANT`),
    and the prefix they share (`RAG_REINDEX__NEXT_EMBEDDER__*`)."""
    out = set()
    for group_name, group_field in Settings.model_fields.items():
        group = group_field.annotation
        assert isinstance(group, type) and issubclass(group, BaseModel)
        for name, f in group.model_fields.items():
            for inner in typing.get_args(f.annotation):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    var = f"RAG_{group_name.upper()}__{name.upper()}__"
                    out |= {var} | {var + sub.upper() for sub in inner.model_fields}
    return out


def test_every_rag_variable_named_in_docs_exists() -> None:
    known = {var for var, _, _ in rows()} | nested_variables()
    assert "RAG_REINDEX__NEXT_EMBEDDER__VARIANT" in known
    for doc in doc_files():
        assert doc.is_file(), doc
        named = set(re.findall(r"\bRAG_[A-Z0-9_]+__[A-Z0-9_]+\b", doc.read_text()))
        assert named - known == set(), f"{doc.name} names settings that do not exist"


def test_every_docs_reference_in_the_code_and_the_docs_resolves() -> None:
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file(), "the design document the code cites"
    sources = [*sorted((ROOT / "app").rglob("*.py")), *doc_files()]
    bad = {
        str(path.relative_to(ROOT)): refs
        for path in sources
        if (refs := unresolved(path.read_text(encoding="utf-8"), ROOT))
    }
    assert bad == {}


def test_the_reference_check_catches_a_made_up_file_or_section(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ARCHITECTURE.md").write_text("# Architecture\n\n## 2. Request path\n\ntext\n")
    good = 'see docs/ARCHITECTURE.md, "Request path"; and docs/ARCHITECTURE.md, Request path again'
    assert unresolved(good, tmp_path) == []
    assert unresolved("see docs/ARCHITECTURE.md for the whole picture", tmp_path) == []
    made_up = [
        'see docs/ARCHITECTURE.md, "Request pathway"',
        "see docs/ARCHITECTURE.md, Retry budget and more",
        'see docs/DESIGN.md, "Request path"',
        "docs/NOWHERE.md",
    ]
    for text in made_up:
        assert unresolved(text, tmp_path) != [], text
