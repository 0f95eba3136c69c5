"""CrossEncoderReranker on a tiny randomly initialised BERT cross-encoder the test builds: a
WordPiece tokenizer trained with `tokenizers` (tokenizer.json), a 2-layer BERT with one output
(save_pretrained), scored with torch; then the same weights exported to model.onnx and scored
with onnxruntime."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.clients.rerank import CrossEncoderReranker, reranker_from_settings
from app.errors import DependencyBadResponse
from app.settings import RerankerSettings
from app.types import Candidate

TRAINING_TEXT = [
    "the cat sat on the mat while the dog slept",
    "dogs chase cats around the garden in spring",
    "quantum computers store information in qubits",
    "solar panels convert sunlight into electric power",
    "the printing press changed how books were made",
    "rivers carry water and sediment to the sea",
]
QUERY = "how do quantum computers store information"
CANDS = [
    Candidate("p0", 0.9, {"text": "quantum computers store information in qubits"}),
    Candidate("p1", 0.8, {"text": "the cat sat on the mat"}),
    Candidate("p2", 0.7, {"text": "solar panels convert sunlight into electric power and store it"}),
    Candidate("p3", 0.6, {"text": "rivers"}),
    Candidate("p4", 0.5, {"text": "the printing press changed how books were made in the cities"}),
]
MAX_POSITIONS = 64


def build_tokenizer(out: Path) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        TRAINING_TEXT,
        trainers.WordPieceTrainer(
            vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        ),
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.save(str(out / "tokenizer.json"))
    return tok


def build_model(out: Path, seed: int, vocab_size: int) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=MAX_POSITIONS,
        num_labels=1,
        # wide random weights, so that different pairs get clearly different scores
        initializer_range=0.5,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    return model


def export_onnx(model: Any, tokenizer: Any, out: Path) -> None:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    tokenizer.enable_padding()
    encs = tokenizer.encode_batch([("a query", "a passage of text"), ("q", "p")])
    example = tuple(
        torch.tensor([getattr(e, attr) for e in encs], dtype=torch.long)
        for attr in ("ids", "attention_mask", "type_ids")
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(
        Logits(model),
        example,
        str(out / "model.onnx"),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


@dataclass
class Models:
    torch_dir: Path  # config.json, model.safetensors, tokenizer.json
    onnx_dir: Path  # the same files plus model.onnx
    other_dir: Path  # another seed, same directory name as torch_dir
    nan_dir: Path  # a classifier bias of NaN
    mismatch_dir: Path  # a tokenizer whose ids the model's embedding table does not have
    reference: list[float]  # the first logits computed directly with transformers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Models:
    import torch

    base = tmp_path_factory.mktemp("cross-encoder")
    torch_dir = base / "torch" / "tiny-ce"
    torch_dir.mkdir(parents=True)
    tok = build_tokenizer(torch_dir)
    model = build_model(torch_dir, seed=1, vocab_size=tok.get_vocab_size())

    # the reference: each pair on its own (no padding), straight through transformers
    reference = []
    for c in CANDS:
        enc = tok.encode(QUERY, c.text)
        with torch.inference_mode():
            logits = model(
                input_ids=torch.tensor([enc.ids]),
                attention_mask=torch.tensor([enc.attention_mask]),
                token_type_ids=torch.tensor([enc.type_ids]),
            ).logits
        reference.append(float(logits[0, 0]))

    onnx_dir = base / "onnx" / "tiny-ce"
    shutil.copytree(torch_dir, onnx_dir)
    export_onnx(model, tok, onnx_dir)

    other_dir = base / "other" / "tiny-ce"
    other_dir.mkdir(parents=True)
    shutil.copy(torch_dir / "tokenizer.json", other_dir)
    build_model(other_dir, seed=2, vocab_size=tok.get_vocab_size())

    nan_dir = base / "nan" / "tiny-ce"
    nan_dir.mkdir(parents=True)
    shutil.copy(torch_dir / "tokenizer.json", nan_dir)
    broken = build_model(nan_dir, seed=1, vocab_size=tok.get_vocab_size())
    with torch.no_grad():
        broken.classifier.bias.fill_(float("nan"))
    broken.save_pretrained(nan_dir)

    mismatch_dir = base / "mismatch" / "tiny-ce"
    mismatch_dir.mkdir(parents=True)
    shutil.copy(torch_dir / "tokenizer.json", mismatch_dir)
    build_model(mismatch_dir, seed=3, vocab_size=8)
    return Models(torch_dir, onnx_dir, other_dir, nan_dir, mismatch_dir, reference)


def test_the_built_model_discriminates(tiny: Models) -> None:
    # a sanity check on the fixture itself: a flat model would make the parity test vacuous
    assert max(tiny.reference) - min(tiny.reference) > 0.1
    assert all(math.isfinite(x) for x in tiny.reference)


async def test_torch_path_scores_each_pair(tiny: Models) -> None:
    settings = RerankerSettings(kind="cross-encoder", model_dir=tiny.torch_dir, concurrency=1)
    r = reranker_from_settings(settings)
    assert isinstance(r, CrossEncoderReranker)
    try:
        assert r.backend == "torch"
        scores = await r.score(QUERY, CANDS)
        assert len(scores) == len(CANDS)
        assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
        # batched with padding, the scores are those of each pair on its own, to float32
        # accuracy: padding changes the matrix shapes, so the kernels sum in another order
        # (a full run under load saw 1.35e-5 on a logit of -2.84, 4.7e-6 relative: ~40 ulps)
        assert scores == pytest.approx(tiny.reference, rel=1e-5, abs=1e-5)
        # one candidate at a time gives the same score as in the batch
        assert r.score_sync(QUERY, CANDS[3:4]) == pytest.approx(scores[3:4], abs=1e-5)
        assert await r.score(QUERY, []) == []
        await r.ping()
    finally:
        await r.aclose()


async def test_onnx_path_matches_torch(tiny: Models) -> None:
    torch_r = CrossEncoderReranker(tiny.torch_dir)
    onnx_r = CrossEncoderReranker(tiny.onnx_dir)
    try:
        assert onnx_r.backend == "onnxruntime"
        onnx_scores = await onnx_r.score(QUERY, CANDS)
        torch_scores = await torch_r.score(QUERY, CANDS)
        assert len(onnx_scores) == len(CANDS)
        assert all(math.isfinite(s) for s in onnx_scores)
        np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-4)
        np.testing.assert_allclose(onnx_scores, tiny.reference, rtol=0, atol=1e-4)
        # the query matters: another query, other scores
        assert onnx_r.score_sync("rivers and the sea", CANDS) != pytest.approx(onnx_scores, abs=1e-3)
    finally:
        await torch_r.aclose()
        await onnx_r.aclose()


def test_id_changes_with_the_weights(tiny: Models, tmp_path: Path) -> None:
    a = CrossEncoderReranker(tiny.torch_dir)
    other = CrossEncoderReranker(tiny.other_dir)  # same directory name, other weights
    onnx = CrossEncoderReranker(tiny.onnx_dir)
    copy = tmp_path / "tiny-ce"
    shutil.copytree(tiny.torch_dir, copy)
    same = CrossEncoderReranker(copy)
    assert a.id != other.id
    assert a.id != onnx.id
    assert a.id == same.id
    assert "tiny-ce" in a.id
    # the token limit changes the scores of long passages, so it is part of the id too
    assert CrossEncoderReranker(tiny.torch_dir, max_length=32).id != a.id


async def test_long_passages_are_truncated_to_what_the_model_takes(tiny: Models) -> None:
    """A passage longer than the model's position table must not break scoring, whatever
    max_length says (it is allowed up to 4096)."""
    long = [Candidate("long", 0.5, {"text": " ".join(TRAINING_TEXT * 20)}), *CANDS[:2]]
    for model_dir in (tiny.torch_dir, tiny.onnx_dir):
        r = CrossEncoderReranker(model_dir, max_length=4096)
        try:
            assert r.max_length == MAX_POSITIONS
            scores = await r.score(QUERY, long)
            assert len(scores) == 3
            assert all(math.isfinite(s) for s in scores)
            # the short ones are unaffected by the long one in their batch
            assert scores[1:] == pytest.approx(tiny.reference[:2], abs=1e-4)
        finally:
            await r.aclose()


async def test_non_finite_scores_are_a_bad_response(tiny: Models) -> None:
    r = CrossEncoderReranker(tiny.nan_dir)
    try:
        with pytest.raises(DependencyBadResponse):
            await r.score(QUERY, CANDS)
    finally:
        await r.aclose()


async def test_a_failing_model_is_a_bad_response_not_a_crash(tiny: Models) -> None:
    """The pipeline degrades on DependencyError; anything else would become a 500."""
    r = CrossEncoderReranker(tiny.mismatch_dir)
    try:
        with pytest.raises(DependencyBadResponse, match="cross-encoder failed"):
            await r.score(QUERY, CANDS)
    finally:
        await r.aclose()


def test_a_directory_without_weights_is_refused(tmp_path: Path, tiny: Models) -> None:
    shutil.copy(tiny.torch_dir / "tokenizer.json", tmp_path)
    shutil.copy(tiny.torch_dir / "config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model\.onnx"):
        CrossEncoderReranker(tmp_path)


def test_pads_with_the_token_the_model_names(tiny: Models, tmp_path: Path) -> None:
    """RoBERTa/XLM-R-style rerankers pad with a token whose id is not 0: batches must use it."""
    import json

    d = tmp_path / "pad-ce"
    shutil.copytree(tiny.torch_dir, d)
    assert CrossEncoderReranker(d)._tokenizer.padding["pad_id"] == 0  # "[PAD]" is id 0 here
    (d / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[MASK]"}))
    r = CrossEncoderReranker(d)
    mask_id = r._tokenizer.token_to_id("[MASK]")
    assert mask_id != 0
    assert r._tokenizer.padding["pad_id"] == mask_id
    enc = r._tokenizer.encode_batch([("a", "b"), ("a", "a much longer passage about rivers")])
    assert enc[0].ids[-1] == mask_id
