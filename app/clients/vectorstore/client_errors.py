"""qdrant-client's exceptions as domain errors: the table errors.py describes, in a module of its
own so that only the server backend imports qdrant-client (about a second of start-up time)."""

from __future__ import annotations

import httpx
import pydantic
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app.clients.vectorstore.errors import REFUSED_VALUE, Row, client_error, says, source, status
from app.errors import (
    DependencyBadResponse,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
    InputRejected,
)

CLIENT_ERRORS: tuple[Row, ...] = (
    # a server's answer, by status
    Row(UnexpectedResponse, DependencyUnavailable, "collection not found (404)", status(404)),
    Row(UnexpectedResponse, DependencyUnavailable, "overloaded or unreachable", status(429, 502, 503, 504)),
    Row(UnexpectedResponse, InputRejected, "refused a value of the request", status(400, 422)),
    Row(UnexpectedResponse, DependencyRejected, "refused the request", client_error),
    Row(UnexpectedResponse, DependencyBadResponse, "answered with an error"),
    Row(ResourceExhaustedResponse, DependencyUnavailable, "rate limited (429)"),
    # qdrant-client wraps both transport failures and unparsable answers in this one type
    Row(
        ResponseHandlingException,
        DependencyTimeout,
        "timed out",
        source(httpx.TimeoutException, TimeoutError),
    ),
    Row(
        ResponseHandlingException,
        DependencyUnavailable,
        "request failed",
        source(httpx.TransportError, OSError),
    ),
    Row(ResponseHandlingException, DependencyBadResponse, "unusable answer"),
    Row((TimeoutError, httpx.TimeoutException), DependencyTimeout, "timed out"),
    Row((OSError, httpx.TransportError), DependencyUnavailable, "connection failed"),
    # a request value the client's models or encoder cannot take: the caller's fault
    Row((pydantic.ValidationError, UnicodeError), InputRejected, "client could not take a value"),
    # local mode (":memory:") raises ValueError where a server answers 400 or 404
    Row(ValueError, InputRejected, "local mode refused a value", says(*REFUSED_VALUE)),
    Row(ValueError, DependencyUnavailable, "local mode", lambda exc: "not found" in str(exc)),
    Row(Exception, DependencyBadResponse, "client error"),
)
