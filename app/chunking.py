"""Chunking: a document longer than the embedding model's window becomes overlapping windows of
at most `max_tokens` tokens (special tokens included), so no part of it is invisible to vector
search. Windows end at a sentence end where one falls in their second half, else at a word
boundary, and only inside a word that has no boundary at all; the next window starts `overlap`
tokens earlier, moved forward to the start of a word. Every chunk's text is an exact slice of the
document (offsets kept), so nothing is rewritten.

Token counts come from the model's own tokenizer (`tokenizer.json` in the model directory, also
used with a remote embedder when present). Without one, a conservative estimate bounds the windows
(two ASCII letters or digits, or one other character, per token).
See docs/ARCHITECTURE.md, "Request path".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import ChunkingSettings, EmbedderSettings

# never fewer than a WordPiece vocabulary makes of the same text (English, accents, other scripts)
PSEUDO_TOKEN = re.compile(r"[A-Za-z0-9]{1,2}|\S")
SENTENCE_ENDS = frozenset(".!?。！？")
REMOTE_MAX_TOKENS = 256  # a remote service's window when the settings do not say
WORD_START_LOOKAHEAD = 16  # tokens a window start may move forward to reach a word start


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    start: int  # character offsets of `text` in the document
    end: int


class Chunker:
    def __init__(self, tokenizer: Any | None, max_tokens: int, overlap: int) -> None:
        special = 0
        if tokenizer is not None:
            tokenizer.no_truncation()
            tokenizer.no_padding()
            special = len(tokenizer.encode("", add_special_tokens=True).ids)
        self.window = max_tokens - special  # content tokens per chunk
        if self.window < 8:
            raise ValueError(f"chunk size of {max_tokens} tokens leaves no room for text")
        if not 0 <= overlap < self.window // 2:
            raise ValueError("chunk overlap must be at least 0 and under half the chunk size")
        self.max_tokens = max_tokens
        self.overlap = overlap
        self._tok = tokenizer

    @classmethod
    def for_model(cls, model_dir: Path | None, max_tokens: int, overlap: int) -> Chunker:
        """The chunker of an exported model directory (its tokenizer), or the estimate."""
        tokenizer = None
        if model_dir is not None and (model_dir / "tokenizer.json").is_file():
            from tokenizers import Tokenizer  # the embedder's own dependency

            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        return cls(tokenizer, max_tokens, overlap)

    @classmethod
    def from_settings(cls, embedder: EmbedderSettings, s: ChunkingSettings) -> Chunker:
        """Windows of the local model's own size and tokenizer; a remote embedder gets
        REMOTE_MAX_TOKENS unless `max_tokens` says otherwise, and the tokenizer in `model_dir` if
        there is one (else the estimate)."""
        if embedder.kind == "onnx":
            manifest = json.loads((embedder.model_dir / "manifest.json").read_text())
            model_max = int(manifest["max_length"])
            if s.max_tokens > model_max:
                # the model would cut such a chunk short, silently
                raise ValueError(
                    f"chunking max_tokens {s.max_tokens} exceeds the model's max_length {model_max}"
                )
            return cls.for_model(embedder.model_dir, s.max_tokens or model_max, s.overlap)
        return cls.for_model(embedder.model_dir, s.max_tokens or REMOTE_MAX_TOKENS, s.overlap)

    def split(self, text: str) -> list[Chunk]:
        offsets = self._offsets(text)
        n = len(offsets)
        if n <= self.window:
            return [Chunk(0, text, 0, len(text))]  # the whole document, exactly as given
        chunks: list[Chunk] = []
        i = 0
        while True:
            e = min(i + self.window, n)
            if e < n:
                e = self._end(text, offsets, i, e)
            start, end = offsets[i][0], offsets[e - 1][1]
            chunks.append(Chunk(len(chunks), text[start:end], start, end))
            if e >= n:
                return chunks
            i = self._word_start(text, offsets, max(e - self.overlap, i + 1), e)

    def count_tokens(self, text: str) -> int:
        """Tokens the embedder sees for `text`, special tokens included."""
        return len(self._offsets(text)) + (self.max_tokens - self.window)

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        if self._tok is not None:
            return list(self._tok.encode(text, add_special_tokens=False).offsets)
        # no tokenizer: pseudo-tokens of at most two ASCII letters or digits, or one other character
        return [m.span() for m in PSEUDO_TOKEN.finditer(text)]

    def _end(self, text: str, offsets: list[tuple[int, int]], i: int, e: int) -> int:
        """The first token not in the chunk that starts at token i: a sentence end in the second
        half of the window if there is one, else the last word boundary, else e."""
        lo = i + (e - i) // 2
        word = None
        for b in range(e, lo, -1):
            gap = text[offsets[b - 1][1] : offsets[b][0]]
            if not gap:
                continue
            last = text[offsets[b - 1][1] - 1] if offsets[b - 1][1] > 0 else ""
            if last in SENTENCE_ENDS:
                return b
            if word is None:
                word = b
        return word if word is not None else e

    @staticmethod
    def _word_start(text: str, offsets: list[tuple[int, int]], j: int, limit: int) -> int:
        for k in range(j, min(j + WORD_START_LOOKAHEAD, limit)):
            if text[offsets[k - 1][1] : offsets[k][0]]:
                return k
        return j
