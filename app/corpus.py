"""Built-in synthetic corpus for the RAG Gateway.

Generates deterministic, topic-coherent English passages entirely in code (no downloads), so the
gateway can be bootstrapped and benchmarked offline. Each topic has its own vocabulary, fact
templates and slot fillers; passages combine a random subset of facts in random order.

The topic data lives next to this module in corpus_topics.txt. Usage:
    python -m app.corpus --n 2000 --seed 0 --out corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from app.ingest import Document

MIN_WORDS = 40
MAX_WORDS = 120


@dataclass(frozen=True)
class Topic:
    slug: str
    sources: tuple[str, ...]
    nouns: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    facts: tuple[str, ...]
    queries: tuple[str, ...]


# Topic data (corpus_topics.txt) in a compact line format, parsed once at import time:
#   "= slug" starts a topic; "sources a|b" and "nouns a|b" list alternatives; "@slot a|b" defines a
#   slot filler list used as {slot} in facts ({noun} is the passage's subject noun); "- text" is a fact
#   template; "? text" is a natural sample query for the topic.
_DATA_FILE = "corpus_topics.txt"


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split("|") if v.strip())


def _parse(data: str) -> tuple[Topic, ...]:
    topics: list[Topic] = []
    fields: dict[str, list[str]] = {}
    slots: dict[str, tuple[str, ...]] = {}
    slug = ""

    def flush() -> None:
        if slug:
            topics.append(
                Topic(
                    slug=slug,
                    sources=_split("|".join(fields["sources"])),
                    nouns=_split("|".join(fields["nouns"])),
                    slots=dict(slots),
                    facts=tuple(fields["-"]),
                    queries=tuple(fields["?"]),
                )
            )

    for raw in data.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "=":
            flush()
            slug, fields, slots = value.strip(), {"sources": [], "nouns": [], "-": [], "?": []}, {}
        elif key.startswith("@"):
            slots[key[1:]] = _split(value)
        elif key in fields:
            fields[key].append(value.strip())
        else:
            raise ValueError(f"unparseable corpus data line: {line!r}")
    flush()
    return tuple(topics)


_TOPICS: tuple[Topic, ...] = _parse(resources.files("app").joinpath(_DATA_FILE).read_text(encoding="utf-8"))
TOPICS: list[str] = [t.slug for t in _TOPICS]
SAMPLE_QUERIES: dict[str, list[str]] = {t.slug: list(t.queries) for t in _TOPICS}

_TITLES: tuple[str, ...] = (
    "A practical guide to {noun}",
    "Notes on {noun}",
    "Common questions about {noun}",
    "What to know about {noun}",
    "{Noun}: tips and pitfalls",
    "Getting started with {noun}",
    "Lessons learned about {noun}",
    "{Noun} explained",
)
_OPENERS: dict[str, tuple[str, ...]] = {
    "handbook": ("This section covers {noun}.", "Reference notes on {noun} follow."),
    "runbook": ("Operational notes on {noun}.", "Checklist items for {noun} are below."),
    "faq": ("A frequent question concerns {noun}.", "Short answers about {noun}:"),
    "blog": ("I have spent a lot of time with {noun} lately.", "Here is what I learned about {noun}."),
    "forum": ("Posting this in case it helps anyone dealing with {noun}.", "Quick reply about {noun}:"),
    "guide": ("This guide walks through {noun}.", "A few basics about {noun} first."),
    "wiki": ("Overview of {noun}.", "This article summarizes {noun}."),
}
_CLOSERS: dict[str, tuple[str, ...]] = {
    "handbook": ("See the related sections for more detail.",),
    "runbook": ("Escalate if the issue persists after these steps.",),
    "faq": ("Check the other answers for related questions.",),
    "blog": ("More on this in a later post.", "Let me know what works for you."),
    "forum": ("Hope this helps someone.", "Happy to answer follow-up questions."),
    "guide": ("Practice these steps until they feel routine.",),
    "wiki": ("See also the related articles.",),
}
_CONNECTORS: tuple[str, ...] = ("Tip:", "Note:", "Worth knowing:", "From experience:", "Remember:")
_FORMATTER = string.Formatter()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random, noun: str) -> str:
    values: dict[str, str] = {}
    for _, field, _, _ in _FORMATTER.parse(template):
        if field and field not in values:
            if field == "noun":
                values[field] = noun
            elif field == "Noun":
                values[field] = _cap(noun)
            else:
                values[field] = rng.choice(slots[field])
    return _cap(template.format(**values))


def _passage(idx: int, topic: Topic, rng: random.Random) -> dict[str, str]:
    source = rng.choice(topic.sources)
    noun = rng.choice(topic.nouns)
    title = _fill(rng.choice(_TITLES), topic.slots, rng, noun)
    sentences: list[str] = []
    if rng.random() < 0.6:
        sentences.append(_fill(rng.choice(_OPENERS[source]), topic.slots, rng, noun))
    words = sum(len(s.split()) for s in sentences)
    target = rng.randint(MIN_WORDS + 5, MAX_WORDS - 15)
    for template in rng.sample(topic.facts, len(topic.facts)):
        sentence = _fill(template, topic.slots, rng, noun)
        if rng.random() < 0.15:
            sentence = f"{rng.choice(_CONNECTORS)} {sentence}"
        n_words = len(sentence.split())
        if words + n_words > MAX_WORDS:
            continue
        sentences.append(sentence)
        words += n_words
        if words >= target:
            break
    closer = rng.choice(_CLOSERS[source])
    if rng.random() < 0.35 and words + len(closer.split()) <= MAX_WORDS:
        sentences.append(closer)
    text = " ".join(sentences)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:  # pragma: no cover - guarded by topic data
        raise ValueError(f"passage for topic {topic.slug!r} has {len(text.split())} words")
    return {
        "id": f"syn-{idx:05d}",
        "title": title,
        "text": text,
        "topic": topic.slug,
        "source": source,
        "lang": "en",
    }


def generate(n: int = 2000, seed: int = 0) -> list[dict[str, str]]:
    """Return exactly ``n`` deterministic passages, balanced across ``TOPICS``."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(seed)
    order = [_TOPICS[i % len(_TOPICS)] for i in range(n)]
    rng.shuffle(order)
    return [_passage(i, topic, rng) for i, topic in enumerate(order)]


def write_jsonl(passages: list[dict[str, str]], out: TextIO) -> None:
    out.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)


# ---------------------------------------------------------------------------------------------
# Document sources of the bootstrap (scripts/qdrant_bootstrap.py) and the eval: the built-in corpus,
# a BEIR-format dataset, a JSONL file. A bad line stops the program with its location.


def synthetic_docs(n: int, tenant: str) -> Iterator[Document]:
    for p in generate(n=n):
        extra = {k: v for k, v in p.items() if k not in {"id", "text", "source"}}
        yield Document(doc_id=p["id"], text=p["text"], tenant=tenant, source=p["source"], extra=extra)


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line stops with its location."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"error: {path}:{n}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise SystemExit(f"error: {path}:{n}: each line must be a JSON object")
            yield n, row


def beir_docs(directory: Path, tenant: str) -> Iterator[Document]:
    source = directory.name
    corpus = directory / "corpus.jsonl"
    for n, row in json_lines(corpus):
        if row.get("_id") in (None, ""):
            raise SystemExit(f"error: {corpus}:{n}: each line needs '_id'")
        title = str(row.get("title") or "").strip()
        text = str(row.get("text") or "").strip()
        body = f"{title}\n{text}" if title else text
        yield Document(doc_id=str(row["_id"]), text=body, tenant=tenant, source=source)


def jsonl_docs(path: Path, tenant: str) -> Iterator[Document]:
    for n, row in json_lines(path):
        if "id" not in row or "text" not in row:
            raise SystemExit(f"error: {path}:{n}: each line needs 'id' and 'text'")
        extra = {k: v for k, v in row.items() if k not in {"id", "text", "source", "tenant"}}
        yield Document(
            doc_id=str(row["id"]),
            text=str(row["text"]),
            tenant=str(row.get("tenant", tenant)),
            source=str(row.get("source", path.stem)),
            extra=extra,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the built-in synthetic corpus as JSONL.")
    parser.add_argument("--n", type=int, default=2000, help="number of passages (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output JSONL file (default stdout)")
    args = parser.parse_args(argv)
    passages = generate(n=args.n, seed=args.seed)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            write_jsonl(passages, f)
    else:
        write_jsonl(passages, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
