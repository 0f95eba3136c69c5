"""Rerankers: score (query, candidate passages) pairs. Selected by `RAG_RERANKER__KIND`.

- lexical (default): BM25 over the candidate passages, fused with the vector score.
- cross-encoder: a sentence-transformers-compatible cross-encoder directory, run with
  onnxruntime when it holds `model.onnx`, otherwise with torch.
- http: a remote reranker speaking TEI `POST /rerank` or Cohere-style `POST /v1/rerank`.

Every reranker returns one finite float per candidate, in candidate order; anything else is a
DependencyBadResponse. CPU-bound work runs on a worker pool, at most `concurrency` at once.
`id` names the model and its revision: it is part of the rerank cache key.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import numpy as np

from app.clients.http import raise_for_http_error, translate_http_errors
from app.errors import DependencyBadResponse, DependencyRejected, DependencyUnavailable
from app.settings import RerankerSettings
from app.types import Candidate

DEPENDENCY = "reranker"
T = TypeVar("T")

_TOKEN = re.compile(r"[a-z0-9]+")
# Function words carry no topical signal in a 50-passage candidate set; dropping them keeps
# BM25 from rewarding passages for "the" and "of".
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "does",
        "do",
        "did",
        "can",
    ]
)


def fold_plural(t: str) -> str:
    """Harman's "S" stemmer: -ies -> -y, -es -> -e, -s -> (none), except -eies/-aies, -aes/-ees/-oes,
    -us/-ss; words of 3 letters or fewer are kept. A query's "causes" meets a passage's "cause";
    on msmarco-5k it lifts BM25 over the full corpus from 0.699 to 0.724 nDCG@10 (README, "Quality").
    """
    if len(t) <= 3 or not t.endswith("s"):
        return t
    if t.endswith("ies") and not t.endswith(("eies", "aies")):
        return t[:-3] + "y"
    if t.endswith("es") and not t.endswith(("aes", "ees", "oes")):
        return t[:-1]
    if t.endswith(("us", "ss")):
        return t
    return t[:-1]


def _marks() -> str:
    """A regex class of every combining mark in the BMP (Unicode category M*): inside a word they
    belong to it (Arabic harakat, Devanagari vowel signs, decomposed accents)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


# a word: letters and digits of any script with their combining marks (no underscore)
_WORD = re.compile(f"(?:[^\\W_]|[{_marks()}])+")
# scripts written without spaces between words: Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan
_UNSPACED = re.compile(
    "[\\u0e00-\\u0eff\\u0f00-\\u0fff\\u1000-\\u109f\\u1780-\\u17ff\\u3040-\\u30ff"
    "\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff]+"
)


# Arabic as Lucene's ArabicNormalizer writes it: hamza forms of alef -> alef, alef maksura ->
# yeh, teh marbuta -> heh, tatweel and harakat (short-vowel marks) removed; most text omits them
_ARABIC = str.maketrans(
    {"\u0622": "\u0627", "\u0623": "\u0627", "\u0625": "\u0627", "\u0649": "\u064a", "\u0629": "\u0647"}
    | dict.fromkeys([0x0640, *range(0x064B, 0x0660), 0x0670])
)


def _unicode_words(text: str) -> list[str]:
    out: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold().translate(_ARABIC)):
        if word.isascii():
            if word not in _STOPWORDS:
                out.append(fold_plural(word))  # English plural folding: ASCII words only
            continue
        pos = 0
        for run in _UNSPACED.finditer(word):
            if run.start() > pos:
                out.append(word[pos : run.start()])
            chars = run.group()
            # no spaces to split on: overlapping character bigrams (a lone character as itself)
            out.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
            pos = run.end()
        if pos < len(word):
            out.append(word[pos:])
    return out


def tokenize(text: str) -> list[str]:
    """Lexical terms of `text`: NFKC, casefolded words of every script (Arabic normalised);
    English stopwords dropped and plurals folded on ASCII words only; character bigrams for
    scripts without spaces."""
    if text.isascii():  # the common case, and the fast path: the same terms as the slow one
        return [fold_plural(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]
    return _unicode_words(text)


class Reranker(Protocol):
    id: str
    remote: bool

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def check_scores(scores: Sequence[float], n: int) -> list[float]:
    """One finite float per candidate, or DependencyBadResponse."""
    if len(scores) != n:
        raise DependencyBadResponse(DEPENDENCY, f"{len(scores)} scores for {n} candidates")
    out = [float(s) for s in scores]
    if not all(math.isfinite(s) for s in out):
        raise DependencyBadResponse(DEPENDENCY, "non-finite score")
    return out


class _Pool:
    """A bounded worker pool for CPU-bound scoring, off the event loop."""

    def __init__(self, concurrency: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


DocStats = tuple[int, Counter[str]]  # (length in tokens, term frequencies)


def doc_stats(text: str) -> DocStats:
    tokens = tokenize(text)
    return len(tokens), Counter(tokens)


def bm25_scores(query: str, texts: Sequence[str], k1: float, b: float) -> list[float]:
    """BM25 of `query` against each text, with document frequencies over `texts` themselves."""
    return bm25_from_stats(set(tokenize(query)), [doc_stats(t) for t in texts], k1, b)


def bm25_from_stats(terms: set[str], docs: Sequence[DocStats], k1: float, b: float) -> list[float]:
    n = len(docs)
    if not terms or n == 0:
        return [0.0] * n
    avgdl = sum(length for length, _ in docs) / n or 1.0
    df = {t: sum(1 for _, tf in docs if t in tf) for t in terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    out = []
    for length, tf in docs:
        norm = k1 * (1 - b + b * length / avgdl)
        out.append(sum(idf[t] * tf[t] * (k1 + 1) / (tf[t] + norm) for t in terms if t in tf))
    return out


class _StatsCache:
    """Token statistics of passages by (point id, content hash): tokenizing the 50 candidates is
    most of a rerank's cost and does not depend on the query. A changed passage has a new
    content hash, so it is never scored with stale statistics. Bounded (about 2.6 KB an entry
    for MS MARCO-sized passages, so the default 10,000 stay near 26 MB); emptied when full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: dict[tuple[str, str], DocStats] = {}
        self._lock = threading.Lock()

    def get(self, c: Candidate) -> DocStats:
        key = (c.id, str(c.payload.get("content_hash") or c.text))
        with self._lock:
            hit = self._data.get(key)
        if hit is not None:
            return hit
        stats = doc_stats(c.text)
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = stats
        return stats


class LexicalReranker:
    """fused = (1 - w) * minmax(vector score) + w * minmax(BM25 over the candidates)."""

    remote = False

    def __init__(
        self, weight: float, k1: float, b: float, concurrency: int = 2, stats_cache_size: int = 10_000
    ) -> None:
        self.weight = weight
        self.k1 = k1
        self.b = b
        # v2: plural folding in the tokenizer (other scores than v1 for the same parameters)
        self.id = f"lexical-bm25@v3:w={weight:g}:k1={k1:g}:b={b:g}"
        self._pool = _Pool(concurrency, "rerank")
        self._stats = _StatsCache(stats_cache_size)

    @classmethod
    def from_settings(cls, s: RerankerSettings) -> LexicalReranker:
        return cls(s.fusion_weight, s.bm25_k1, s.bm25_b, s.concurrency)

    def score_sync(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        stats = [self._stats.get(c) for c in candidates]
        lexical = _minmax(bm25_from_stats(set(tokenize(query)), stats, self.k1, self.b))
        dense = _minmax([c.score for c in candidates])
        w = self.weight
        return [(1 - w) * d + w * x for d, x in zip(dense, lexical, strict=True)]

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        return check_scores(await self._pool.run(self.score_sync, query, candidates), len(candidates))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._pool.close()


class CrossEncoderReranker:
    """A sentence-transformers-style cross-encoder directory (config.json, tokenizer.json and
    model.onnx or torch weights). The relevance score is the first logit."""

    remote = False

    def __init__(self, model_dir: Path, max_length: int = 256, concurrency: int = 1) -> None:
        from tokenizers import Tokenizer

        self.model_dir = model_dir
        # a pair longer than the model's position table would make the model itself fail
        max_length = min(max_length, _model_max_length(model_dir))
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_length)
        if self._tokenizer.padding is None:  # keep padding a tokenizer.json declares itself
            pad = _pad_token(model_dir)
            pad_id = self._tokenizer.token_to_id(pad)
            # BERT pads with id 0, XLM-R/RoBERTa-based rerankers with 1: use the model's own
            self._tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad)
        onnx_path = model_dir / "model.onnx"
        weights = (
            onnx_path
            if onnx_path.exists()
            else _first_existing(model_dir, ["model.safetensors", "pytorch_model.bin"])
        )
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        self.id = f"cross-encoder:{model_dir.name}@{digest}:len={max_length}"
        self._run: Callable[[dict[str, np.ndarray]], np.ndarray]
        if onnx_path.exists():
            import onnxruntime as ort

            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            names = {i.name for i in session.get_inputs()}

            def run_onnx(feeds: dict[str, np.ndarray]) -> np.ndarray:
                logits = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
                return np.asarray(logits)

            self._run = run_onnx
            self.backend = "onnxruntime"
        else:
            import torch
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
            model.eval()

            def run_torch(feeds: dict[str, np.ndarray]) -> np.ndarray:
                with torch.inference_mode():
                    out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
                return np.asarray(out.logits.float().numpy())

            self._run = run_torch
            self.backend = "torch"
        self._pool = _Pool(concurrency, "cross-encoder")

    @classmethod
    def from_settings(cls, s: RerankerSettings) -> CrossEncoderReranker:
        assert s.model_dir is not None  # checked by RerankerSettings
        return cls(s.model_dir, s.max_length, s.concurrency)

    def score_sync(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        encs = self._tokenizer.encode_batch([(query, c.text) for c in candidates])
        feeds = {
            "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
        }
        try:
            logits = self._run(feeds)
        except Exception as exc:  # a failing model degrades the answer like a failing service
            raise DependencyBadResponse(DEPENDENCY, f"cross-encoder failed: {exc}") from exc
        return [float(x) for x in logits.reshape(len(candidates), -1)[:, 0]]

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        return check_scores(await self._pool.run(self.score_sync, query, candidates), len(candidates))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._pool.close()


def _model_max_length(model_dir: Path) -> int:
    """The longest input the model takes: tokenizer_config.json's model_max_length, bounded by
    config.json's position table (RoBERTa-style models reserve two positions)."""
    import json

    limit = 1 << 20
    try:
        config = json.loads((model_dir / "config.json").read_text())
        positions = int(config["max_position_embeddings"])
        limit = positions - 2 if "roberta" in str(config.get("model_type", "")) else positions
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        declared = json.loads((model_dir / "tokenizer_config.json").read_text()).get("model_max_length")
        if isinstance(declared, int) and 0 < declared < limit:
            limit = declared
    except (OSError, ValueError, AttributeError):
        pass
    return limit


def _pad_token(model_dir: Path) -> str:
    """The pad token named by the model's tokenizer files, "[PAD]" when none says."""
    import json

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            value = json.loads((model_dir / name).read_text()).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return "[PAD]"


def _first_existing(d: Path, names: list[str]) -> Path:
    for n in names:
        if (d / n).exists():
            return d / n
    raise FileNotFoundError(f"no model.onnx, model.safetensors or pytorch_model.bin in {d}")


class _BatchTooLarge(Exception):
    """A server refused a request for holding too many texts (413)."""

    def __init__(self, error: DependencyRejected, sent: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent


class HttpReranker:
    """TEI `POST /rerank` or Cohere-compatible `POST /v1/rerank`.

    A server takes at most so many texts per request (TEI refuses more than its
    `max_client_batch_size` with 413): the candidates go out in requests of at most that many,
    at once, and the scores are merged back in candidate order. The limit is TEI's
    `GET /info` `max_client_batch_size`, read once, when more candidates than the default (32,
    TEI's own default) are to be scored or when a request is refused with 413; 32 where the
    server does not say (a Cohere-style API, or no /info). Scores are per pair, so splitting does
    not change them.
    """

    remote = True
    DEFAULT_BATCH = 32

    def __init__(self, settings: RerankerSettings, client: httpx.AsyncClient) -> None:
        self._s = settings
        self._client = client
        self.id = f"http:{settings.api}:{settings.model}@{settings.url}"
        self._batch: int | None = None if settings.api == "tei" else self.DEFAULT_BATCH
        self._batch_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, s: RerankerSettings) -> HttpReranker:
        assert s.url is not None  # checked by RerankerSettings
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        return cls(s, httpx.AsyncClient(base_url=s.url, timeout=s.timeout_s, limits=limits))

    async def batch_size(self) -> int:
        """The server's limit on texts per request. Any answer to `GET /info` is remembered (no
        usable `max_client_batch_size` in it: the default); no answer raises like a rerank would,
        and the next call asks again."""
        if self._batch is not None:
            return self._batch
        async with self._batch_lock:
            if self._batch is None:
                with translate_http_errors(DEPENDENCY):
                    resp = await self._client.get("/info")
                self._batch = self.DEFAULT_BATCH
                if resp.status_code == 200:
                    try:
                        limit = resp.json().get("max_client_batch_size")
                    except (ValueError, AttributeError):
                        limit = None
                    if type(limit) is int and limit > 0:
                        self._batch = limit
            return self._batch

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        texts = [c.text for c in candidates]
        known = self._batch is not None
        size = self._batch or self.DEFAULT_BATCH
        if not known and len(texts) > size:
            size, known = await self.batch_size(), True
        try:
            scores = await self._score_in_batches(query, texts, size)
        except _BatchTooLarge as exc:
            if known:
                raise exc.error from None
            # a server whose limit is below the default: ask it once, then split to fit
            size = await self.batch_size()
            if size >= exc.sent:
                raise exc.error from None
            try:
                scores = await self._score_in_batches(query, texts, size)
            except _BatchTooLarge as again:
                raise again.error from None
        return check_scores(scores, len(texts))

    async def _score_in_batches(self, query: str, texts: list[str], size: int) -> list[float]:
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(chunks) == 1:
            return await self._score_chunk(query, texts)
        tasks = [asyncio.ensure_future(self._score_chunk(query, chunk)) for chunk in chunks]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            # one failed (or the caller gave up): the others' answers are of no use
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [s for part in parts for s in part]

    async def _score_chunk(self, query: str, texts: list[str]) -> list[float]:
        if self._s.api == "tei":
            path = "/rerank"
            body: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": False, "truncate": True}
        else:
            path = "/v1/rerank"
            body = {"model": self._s.model, "query": query, "documents": texts, "top_n": len(texts)}
        with translate_http_errors(DEPENDENCY):
            resp = await self._client.post(path, json=body)
        if resp.status_code == 413:
            try:
                raise_for_http_error(DEPENDENCY, resp)
            except DependencyRejected as error:
                raise _BatchTooLarge(error, len(texts)) from None
        raise_for_http_error(DEPENDENCY, resp)
        return self._parse(resp, len(texts))

    def _parse(self, resp: httpx.Response, n: int) -> list[float]:
        try:
            data = resp.json()
            rows = data if self._s.api == "tei" else data["results"]
            key = "score" if self._s.api == "tei" else "relevance_score"
            scores: list[float | None] = [None] * n
            for row in rows:
                i, score = row["index"], row[key]
                # strict JSON types: 1.7, true or "0.2" are a broken peer, not values to coerce
                if type(i) is not int or not 0 <= i < n or scores[i] is not None:
                    raise ValueError(f"bad or repeated index {i!r}")
                if type(score) not in (int, float):
                    raise ValueError(f"score {score!r} is not a number")
                scores[i] = float(score)
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyBadResponse(DEPENDENCY, f"malformed rerank response: {exc}") from exc
        if any(s is None for s in scores):
            raise DependencyBadResponse(DEPENDENCY, "rerank response misses candidates")
        return [s for s in scores if s is not None]

    async def ping(self) -> None:
        with translate_http_errors(DEPENDENCY):
            resp = await self._client.get("/health")
        if resp.status_code >= 400:
            raise DependencyUnavailable(DEPENDENCY, f"health answered {resp.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def reranker_from_settings(s: RerankerSettings) -> Reranker | None:
    if s.kind == "none":
        return None
    if s.kind == "http":
        return HttpReranker.from_settings(s)
    if s.kind == "cross-encoder":
        return CrossEncoderReranker.from_settings(s)
    return LexicalReranker.from_settings(s)
