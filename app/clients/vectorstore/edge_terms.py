"""Our vocabulary in the embedded engine's (`qdrant-edge-py`) terms: payload-index parameters,
filters and index type names."""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_edge import (
    BoolIndexParams,
    FieldCondition,
    Filter,
    IntegerIndexParams,
    KeywordIndexParams,
    MatchAny,
    MatchValue,
)

from app.clients.vectorstore.shared import Condition
from app.settings import FilterKeyType


def index_params(kind: FilterKeyType, is_tenant: bool = False) -> Any:
    if kind == "integer":
        return IntegerIndexParams(lookup=True, range=False)
    if kind == "bool":
        return BoolIndexParams()
    return KeywordIndexParams(is_tenant=True) if is_tenant else KeywordIndexParams()


def edge_filter(where: list[Condition]) -> Any:
    must: list[Any] = []
    for key, value in where:
        if isinstance(value, list):
            must.append(FieldCondition(key=key, match=MatchAny(value)))  # type: ignore[arg-type]
        else:
            # qdrant-edge 0.9.0 turns a Python bool into the integer 1 or 0, which matches
            # integers and no boolean; numpy's bool reaches the engine as a boolean
            match = np.bool_(value) if isinstance(value, bool) else value
            must.append(FieldCondition(key=key, match=MatchValue(match)))  # type: ignore[arg-type]
    return Filter(must=must) if must else None


def type_name(data_type: Any) -> str:
    """`PayloadSchemaType.Keyword` -> "keyword", as the server's JSON names it."""
    return str(data_type).rsplit(".", 1)[-1].lower()
