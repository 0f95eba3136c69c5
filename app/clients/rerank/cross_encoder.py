"""A cross-encoder reranker: a sentence-transformers-compatible model directory, run with
onnxruntime when it holds `model.onnx`, otherwise with torch, on a bounded worker pool.

`id` names the model and its weights' digest: it is part of the rerank cache key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.clients.inference import translate_model_errors
from app.clients.rerank.pool import DEPENDENCY, PooledReranker
from app.settings import RerankerSettings
from app.types import Candidate


class CrossEncoderReranker(PooledReranker):
    """A sentence-transformers-style cross-encoder directory (config.json, tokenizer.json and
    model.onnx or torch weights). The relevance score is the first logit."""

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
        super().__init__(concurrency, "cross-encoder")

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
        # a failing model degrades the answer like a failing service
        with translate_model_errors(DEPENDENCY, "cross-encoder"):
            logits = self._run(feeds)
        return [float(x) for x in logits.reshape(len(candidates), -1)[:, 0]]


def _model_max_length(model_dir: Path) -> int:
    """The longest input the model takes: tokenizer_config.json's model_max_length, bounded by
    config.json's position table (RoBERTa-style models reserve two positions)."""
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
