"""The two translation tables of app/clients/vectorstore (errors.py, client_errors.py), row by row: every row is the
first match of one example exception of its library, and that example becomes the row's domain
error, with what it means for the breaker (app/resilience.py counts `counts_as_failure`)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pydantic
import pytest
from qdrant_client import models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app import errors as domain
from app.clients.vectorstore.client_errors import CLIENT_ERRORS
from app.clients.vectorstore.errors import EDGE_ERRORS, Row, translate, translated


def answered(status: int) -> UnexpectedResponse:
    return UnexpectedResponse(status, "reason", b'{"status": {"error": "x"}}', httpx.Headers())


def validation_error() -> pydantic.ValidationError:
    try:
        models.MatchValue(value=1.5)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("qdrant-client took a float match value")


# one example per row, in the order of the table, with the domain error it must become
CLIENT_CASES: list[tuple[BaseException, type[domain.DependencyError]]] = [
    (answered(404), domain.DependencyUnavailable),
    (answered(503), domain.DependencyUnavailable),
    (answered(400), domain.InputRejected),
    (answered(403), domain.DependencyRejected),
    (answered(500), domain.DependencyBadResponse),
    (ResourceExhaustedResponse("slow down", 1), domain.DependencyUnavailable),
    (ResponseHandlingException(httpx.ReadTimeout("read")), domain.DependencyTimeout),
    (ResponseHandlingException(httpx.ConnectError("refused")), domain.DependencyUnavailable),
    (ResponseHandlingException(ValueError("not json")), domain.DependencyBadResponse),
    (httpx.ConnectTimeout("connect"), domain.DependencyTimeout),
    (ConnectionRefusedError(111, "refused"), domain.DependencyUnavailable),
    (validation_error(), domain.InputRejected),
    (ValueError("Wrong input: Vector dimension error: expected dim: 4, got 7"), domain.InputRejected),
    (ValueError("Collection t_docs not found"), domain.DependencyUnavailable),
    (KeyError("result"), domain.DependencyBadResponse),
]

EDGE_CASES: list[tuple[BaseException, type[domain.DependencyError]]] = [
    (TypeError("failed to extract enum Helper ('String | Integer | Bool')"), domain.InputRejected),
    (RuntimeError("cannot schedule new futures after shutdown"), domain.DependencyUnavailable),
    (Exception("Service runtime error: Shard is not initialized"), domain.DependencyUnavailable),
    (TimeoutError(), domain.DependencyTimeout),
    (PermissionError(13, "denied"), domain.DependencyUnavailable),
    (Exception("Timeout error: search took too long"), domain.DependencyTimeout),
    (Exception("Vector dimension error: expected dim: 16, got 19"), domain.InputRejected),
    (Exception("Service internal error: segment is broken"), domain.DependencyBadResponse),
]

TABLES = [(CLIENT_ERRORS, CLIENT_CASES), (EDGE_ERRORS, EDGE_CASES)]


def first_row(table: Sequence[Row], exc: BaseException) -> int:
    return next(i for i, row in enumerate(table) if isinstance(exc, row.kind) and row.when(exc))


@pytest.mark.parametrize(("table", "cases"), TABLES, ids=["qdrant-client", "qdrant-edge"])
def test_every_row_is_the_first_match_of_its_example(
    table: Sequence[Row], cases: list[tuple[BaseException, type[domain.DependencyError]]]
) -> None:
    assert [first_row(table, exc) for exc, _ in cases] == list(range(len(table)))
    assert table[-1].kind is Exception  # the last row takes whatever is left


@pytest.mark.parametrize(
    ("exc", "expected"),
    [pytest.param(e, c, id=f"client-{i}") for i, (e, c) in enumerate(CLIENT_CASES)]
    + [pytest.param(e, c, id=f"edge-{i}") for i, (e, c) in enumerate(EDGE_CASES)],
)
def test_each_example_becomes_its_domain_error(
    exc: BaseException, expected: type[domain.DependencyError]
) -> None:
    table = CLIENT_ERRORS if any(exc is e for e, _ in CLIENT_CASES) else EDGE_ERRORS
    with pytest.raises(domain.DependencyError) as raised, translated(table):
        raise exc
    err = raised.value
    assert type(err) is expected
    assert err.dependency == "qdrant"
    assert err.__cause__ is exc
    assert translate(table, exc).reason == expected.reason


def test_a_refused_request_is_not_a_breaker_failure() -> None:
    """What the caller sent was refused (400/422 from a server, a bad value for the engine): the
    breaker, shared by every caller, must neither open nor count it."""
    refused = [answered(400), answered(422), validation_error(), ValueError("Wrong input: x")]
    for exc in refused:
        err = translate(CLIENT_ERRORS, exc)
        assert isinstance(err, domain.InputRejected) and not err.counts_as_failure and not err.transient
    for exc in (TypeError("bad value"), Exception("Wrong input: mixed types")):
        err = translate(EDGE_ERRORS, exc)
        assert isinstance(err, domain.InputRejected) and not err.counts_as_failure
    err = translate(CLIENT_ERRORS, answered(401))
    assert type(err) is domain.DependencyRejected and not err.counts_as_failure
    for exc in (answered(502), answered(500), httpx.ReadTimeout("t")):
        assert translate(CLIENT_ERRORS, exc).counts_as_failure


def test_domain_errors_pass_through_unchanged() -> None:
    mine = domain.DependencyUnavailable("qdrant", "collection does not exist")
    for table in (CLIENT_ERRORS, EDGE_ERRORS):
        with pytest.raises(domain.DependencyUnavailable) as raised, translated(table):
            raise mine
        assert raised.value is mine
