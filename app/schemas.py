"""Request and response models of the HTTP API (see docs/ARCHITECTURE.md, "Request path").
Strict: no coercion of "50" to 50, no unknown fields (50.0 is 50: JSON has one number type, and
JSON Schema says so too)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

MAX_Q_CHARS = 2048
MAX_K = 200
MAX_FILTER_KEYS = 8
MAX_FILTER_VALUES = 32
# Whitespace spelled out: exactly what Python's str.isspace() (and so str.split(), which trims
# q) calls whitespace. `\s` differs between Python and the ECMA regexes of JSON Schema (\x85 and
# \x1c-\x1f are whitespace only to Python, \ufeff only to ECMA), and a client validating against
# the schema must get the answer the server gives.
WS = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"[^{WS}]"
# not blank, and at most MAX_Q_CHARS characters from the first to the last non-space
Q_PATTERN = rf"^[{WS}]*[^{WS}]([\s\S]{{0,{MAX_Q_CHARS - 2}}}[^{WS}])?[{WS}]*$"


def whole(v: Any) -> Any:
    """5.0 -> 5 (an integer spelled as a float); 5.5, "5" and true stay what they are, and fail."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def unicode_text(v: str) -> str:
    """Refuse a lone surrogate (`"\ud800"` is valid JSON, but no UTF-8 encoder takes it): Qdrant,
    Redis and the reranker would each fail on it, and that failure must never count against them."""
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return v


# a string that every dependency can encode; use it for every string that leaves the process
Text = Annotated[StrictStr, AfterValidator(unicode_text)]

# constraints go before the validator, so that the JSON schema shows them
WholeInt = Annotated[StrictInt, BeforeValidator(whole)]
FilterInt = Annotated[StrictInt, Field(ge=-(2**53 - 1), le=2**53 - 1), BeforeValidator(whole)]
FilterScalar = Text | FilterInt | StrictBool
# a list matches any of its values, which must share one type: Qdrant's match-any takes either
# strings or integers, never a mix
FilterList = (
    Annotated[list[Text], Field(min_length=1, max_length=MAX_FILTER_VALUES)]
    | Annotated[list[FilterInt], Field(min_length=1, max_length=MAX_FILTER_VALUES)]
)
FilterValue = FilterScalar | FilterList


def normalize_query(q: str) -> str:
    """NFC, trimmed, inner whitespace collapsed: what is embedded and what keys the cache."""
    return " ".join(unicodedata.normalize("NFC", q).split())


class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    q: StrictStr = Field(
        # 1..MAX_Q_CHARS characters once leading and trailing whitespace is trimmed, not blank:
        # the validator below checks it (and says so); the schema says it with a pattern
        json_schema_extra={"minLength": 1, "pattern": Q_PATTERN},
        description=f"the query; 1..{MAX_Q_CHARS} characters after trimming",
    )
    k: WholeInt = Field(50, ge=1, le=MAX_K, description="candidates fetched and reranked")
    top_n: Annotated[StrictInt, Field(ge=1, le=MAX_K), BeforeValidator(whole)] | None = Field(
        None, description="passages returned; default k"
    )
    filter: dict[Text, FilterValue] | None = Field(
        None,
        max_length=MAX_FILTER_KEYS,
        description="exact match on allow-listed payload keys: {field: value or [values]}",
    )
    rerank: StrictBool = True
    ef: Annotated[StrictInt, Field(ge=1), BeforeValidator(whole)] | None = Field(
        None, description="hnsw_ef override, clamped to the maximum"
    )

    @field_validator("q")
    @classmethod
    def _q(cls, v: str) -> str:
        unicode_text(v)
        trimmed = v.strip()
        if not trimmed:
            raise ValueError("q must not be blank")
        if len(trimmed) > MAX_Q_CHARS:  # the length of what is asked, not of its padding
            raise ValueError(f"q must be at most {MAX_Q_CHARS} characters after trimming")
        return normalize_query(trimmed)

    @model_validator(mode="after")
    def _top_n(self) -> RagRequest:
        if self.top_n is not None and self.top_n > self.k:
            raise ValueError("top_n must not exceed k")
        return self

    @property
    def n(self) -> int:
        return self.top_n if self.top_n is not None else self.k

    def filters(self) -> dict[str, list[str | int | bool]]:
        out: dict[str, list[str | int | bool]] = {}
        for key, v in (self.filter or {}).items():
            out[key] = list(v) if isinstance(v, list) else [v]
        return out


def document_filter_keys(openapi: dict[str, Any], keys: Mapping[str, str]) -> None:
    """Name the allow-listed `filter` keys (a setting, not a type) in the served OpenAPI schema,
    each with the values its payload-index type takes (keyword: strings, integer: integers,
    bool: booleans; a list where Qdrant's match-any allows one)."""
    wanted = {"keyword": ("string",), "integer": ("integer",), "bool": ("boolean",)}
    flt = openapi.get("components", {}).get("schemas", {}).get("RagRequest", {}).get("properties", {})
    for variant in flt.get("filter", {}).get("anyOf", []):
        if variant.get("type") != "object":
            continue
        values = variant.get("additionalProperties", {}).get("anyOf", [])

        def of(kind: str, values: list[dict[str, Any]] = values) -> list[dict[str, Any]]:
            types = wanted[kind]
            return [v for v in values if v.get("type") in types or v.get("items", {}).get("type") in types]

        variant["propertyNames"] = {"enum": sorted(keys)}
        variant["properties"] = {name: {"anyOf": of(kind)} for name, kind in sorted(keys.items())}
        variant["additionalProperties"] = False
    # a document's payload field that is a filter key takes the key's type (POST /documents)
    doc = openapi.get("components", {}).get("schemas", {}).get("DocumentIn", {})
    payload = doc.get("additionalProperties", {}).get("anyOf", [])
    props = doc.get("properties")
    if payload and isinstance(props, dict):
        reserved = doc.get("propertyNames", {}).get("not", {}).get("enum", [])
        for name, kind in sorted(keys.items()):
            # `source` is a field of its own; `doc_id` is reserved (the `id` field)
            if name not in props and name not in reserved:
                props[name] = {"anyOf": [v for v in payload if v.get("type") in wanted[kind]]}


class Passage(BaseModel):
    id: str
    score: float
    vector_score: float
    text: str
    payload: dict[str, Any]


class Degradation(BaseModel):
    component: str
    reason: str


class Timings(BaseModel):
    embed: float
    search: float
    rerank: float
    total: float


class RagResponse(BaseModel):
    request_id: str
    results: list[Passage]
    reranked: bool
    cache: Literal["hit", "miss", "bypass", "off"]
    degraded: list[Degradation]
    timings_ms: Timings


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str


class ErrorBody(BaseModel):
    error: ErrorDetail
