"""Where things are: the repository root and the exported ONNX model the tests use."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# absolute: `make test` exports it relative to the checkout, and tests link to it from elsewhere
MODEL_DIR = Path(os.environ.get("RAG_EMBEDDER__MODEL_DIR", ROOT / "data/models/all-MiniLM-L6-v2")).resolve()
