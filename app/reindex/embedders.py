"""The embedders a gateway may serve with: the one it is configured with (`RAG_EMBEDDER__*`) and
the next one (`RAG_REINDEX__NEXT_EMBEDDER__*`), which a `reembed` job moves the collection to
(docs/ARCHITECTURE.md, "Reindex"). An embedder is loaded only when needed (a model costs
memory): the next one for a re-embedding, or at start-up when the serving collection was made
by it (a switch whose settings were not promoted yet); ids are known without loading
(`configured_id`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.clients.embedder import Embedder, configured_id, embedder_from_settings
from app.clients.vectorstore import VectorStore
from app.errors import DependencyError, DependencyRejected
from app.settings import EmbedderSettings, Settings

log = logging.getLogger("rag.embedders")


def promote_env(s: EmbedderSettings) -> dict[str, str]:
    """The `RAG_EMBEDDER__*` variables that make `s` the configured embedder (every field set
    apart from its default)."""
    out: dict[str, str] = {}
    for name, value in s.model_dump(exclude_defaults=True).items():
        out[f"RAG_EMBEDDER__{name.upper()}"] = str(value)
    return out


class EmbedderChoice:
    """The configured embedders, by id, and how to load one."""

    def __init__(
        self, settings: Settings, load: Callable[[EmbedderSettings], Embedder] = embedder_from_settings
    ) -> None:
        self.serving, self.next = settings.embedder, settings.reindex.next_embedder
        self.load = load

    def configured(self) -> list[EmbedderSettings]:
        return [self.serving] + ([self.next] if self.next is not None else [])

    def settings_of(self, embedder_id: str) -> EmbedderSettings | None:
        """The configured embedder whose id is `embedder_id`, if any."""
        for s in self.configured():
            if configured_id(s) == embedder_id:
                return s
        return None

    def ids(self) -> list[str]:
        return [configured_id(s) for s in self.configured()]

    async def for_serving(self, store: VectorStore) -> tuple[EmbedderSettings, Embedder]:
        """The embedder to serve `store` with, loaded: the configured one, or the next one if the
        collection was made by it (with a warning to promote its settings). A collection that
        neither made is refused (RuntimeError naming the ids): the gateway does not start."""
        chosen = self.serving
        try:
            await store.check_embedder(configured_id(self.serving))
        except DependencyRejected as exc:
            chosen = await self._next_for(store, exc.message)
        except DependencyError as exc:  # not reachable now: checked on the first write instead
            log.warning(
                "embedder check not made", extra={"collection": store.collection, "error": exc.message}
            )
        return chosen, self.load(chosen)

    async def _next_for(self, store: VectorStore, refused: str) -> EmbedderSettings:
        nxt = self.next
        if nxt is not None and configured_id(nxt) != configured_id(self.serving):
            try:
                await store.check_embedder(configured_id(nxt))
            except DependencyRejected:
                refused = f"{refused} (nor with the next embedder {configured_id(nxt)})"
            else:
                log.warning(
                    "serving with the next embedder: a reindex switched the collection to it; "
                    "promote its settings (RAG_EMBEDDER__*) before the next restart",
                    extra={
                        "collection": store.collection,
                        "embedder": configured_id(nxt),
                        "promote": promote_env(nxt),
                    },
                )
                return nxt
        log.error("refusing to serve", extra={"collection": store.collection, "error": refused})
        raise RuntimeError(refused)
