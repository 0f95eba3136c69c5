"""In-process model failures as domain errors, shared by the ONNX embedder and the cross-encoder.

A model run by onnxruntime, torch or tokenizers fails with that library's exceptions
(onnxruntime's `Fail`, `InvalidArgument`, `RuntimeException`; torch's `RuntimeError` and
`IndexError`; numpy's `ValueError`). They become app.errors types here, in one table, the
first match winning (most specific first), as app/clients/http.py does for httpx:

    already a domain error      passes through unchanged
    MemoryError                 DependencyUnavailable: the process ran short, not the model;
                                transient, a retry may pass
    any other Exception         DependencyBadResponse: the model failed on this input; a
                                breaker failure, never retried

So a failing model is a failing dependency (503 for the embedder, a degraded answer for the
reranker), never a 500. Cancellation and other BaseExceptions are not touched. How domain
errors become HTTP: see docs/ARCHITECTURE.md, "Errors".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import DependencyBadResponse, DependencyError, DependencyUnavailable

MODEL_ERRORS: tuple[tuple[type[Exception], type[DependencyError]], ...] = (
    (MemoryError, DependencyUnavailable),
    (Exception, DependencyBadResponse),
)


@contextmanager
def translate_model_errors(dependency: str, what: str) -> Iterator[None]:
    """Run a model call; its library's exceptions leave as `MODEL_ERRORS` says, with the
    message "`what` failed: <the library's text>"."""
    try:
        yield
    except DependencyError:
        raise
    except Exception as exc:
        for library_error, domain_error in MODEL_ERRORS:
            if isinstance(exc, library_error):
                raise domain_error(dependency, f"{what} failed: {exc}") from exc
        raise
