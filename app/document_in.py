"""A document as clients send it (`POST /documents` and each line of an ingestion job): the
rules, the model and the conversion to what app/ingest.py writes. Outside the API layer so the
job runner can parse the lines of a job it resumes at start-up."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from app.errors import InvalidRequest
from app.ingest import RESERVED, Document
from app.policy import FILTER_VALUE_TYPES
from app.schemas import NOT_BLANK, Text, whole

DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
MAX_DOCUMENTS = 256
MAX_TEXT_CHARS = 1024 * 1024  # longer than the model reads: chunked (app/chunking.py)
MAX_FIELDS = 19  # id, text, source and up to 16 payload fields
MAX_VALUE_CHARS = 256
EXTRA_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
EXTRA_KEY = re.compile(EXTRA_KEY_PATTERN)
DOC_ID = re.compile(DOC_ID_PATTERN)
JSON_SAFE_INT = 2**53 - 1
# set by ingestion, never by the caller
RESERVED_NAMES: list[JsonValue] = [name for name in sorted(RESERVED) if name != "text"]

PayloadValue = (
    Annotated[Text, Field(max_length=MAX_VALUE_CHARS)]
    | Annotated[StrictInt, Field(ge=-JSON_SAFE_INT, le=JSON_SAFE_INT), BeforeValidator(whole)]
    | StrictBool
)


class DocumentIn(BaseModel):
    """One passage: `id`, `text`, optional `source`, and up to 16 flat payload fields."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        # what the validator below checks, said in the schema too
        json_schema_extra={
            "maxProperties": MAX_FIELDS,
            "propertyNames": {"pattern": EXTRA_KEY_PATTERN, "not": {"enum": RESERVED_NAMES}},
        },
    )
    __pydantic_extra__: dict[str, PayloadValue] = Field(init=False)

    id: StrictStr = Field(pattern=DOC_ID_PATTERN, description="document id; unique within the tenant")
    text: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK, description="passage text")
    source: Text = Field("", max_length=MAX_VALUE_CHARS, description="where the passage comes from")

    @model_validator(mode="after")
    def _extras(self) -> DocumentIn:
        extra = self.__pydantic_extra__ or {}
        # model_fields_set already holds the extra fields that were set: count each field once
        if len(self.model_fields_set | set(extra)) > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} fields per document (id, text, source and payload)")
        for key in extra:
            if key in RESERVED or not EXTRA_KEY.match(key):
                raise ValueError(f"payload field {key[:64]!r} is reserved or not a plain identifier")
        return self


def check_filter_types(docs: Iterable[DocumentIn], keys: Mapping[str, str]) -> None:
    """A payload field that is a filter key must have the key's type: a `year` stored as "2020"
    under an integer index could never be matched, silently."""
    for d in docs:
        fields = {"source": d.source, **(d.__pydantic_extra__ or {})}
        for key, kind in keys.items():
            if key in fields and type(fields[key]) is not FILTER_VALUE_TYPES[kind]:
                raise InvalidRequest(
                    f"document {d.id!r}: payload field {key!r} is a filter key of type {kind}"
                )


def to_document(d: DocumentIn, tenant: str) -> Document:
    return Document(
        doc_id=d.id, text=d.text, tenant=tenant, source=d.source, extra=dict(d.__pydantic_extra__ or {})
    )


class BadLine(ValueError):
    """A line of a job that is not a document: why, and the line's `id` when it has a usable one
    (so the audit names the document, not only the line)."""

    def __init__(self, message: str, doc_id: str | None = None) -> None:
        super().__init__(message)
        self.doc_id = doc_id


def _line_id(line: bytes) -> str | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    doc_id = obj.get("id") if isinstance(obj, dict) else None
    return doc_id if isinstance(doc_id, str) and DOC_ID.match(doc_id) else None


def line_parser(tenant: str, filter_keys: Mapping[str, str]) -> Callable[[bytes], Document]:
    """The parser of one line of an ingestion job: a document, or BadLine saying why not."""

    def parse(line: bytes) -> Document:
        try:
            doc = DocumentIn.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                raise BadLine("line is not valid JSON") from None
            where = ".".join(str(x) for x in first["loc"]) or "document"
            raise BadLine(f"{where}: {first['msg']}", _line_id(line)) from None
        try:
            check_filter_types([doc], filter_keys)
        except InvalidRequest as exc:
            raise BadLine(exc.message, doc.id) from None
        return to_document(doc, tenant)

    return parse
