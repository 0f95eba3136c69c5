"""Zero-downtime reindex (docs/ARCHITECTURE.md, "Reindex"): a job (`POST /jobs/reindex`, kind
"reindex") builds a new collection from the serving one, with new HNSW parameters or re-embedded
from the stored passage texts, verifies it and switches to it atomically; the replaced collection
is kept for a rollback (RAG_REINDEX__KEEP).

- service.py: the job (build, verify, switch or roll back), the same on both backends;
- edge.py: the embedded engine (a shard directory beside the serving one, the pointer file);
- pages.py: the serving collection page by page, as points to write (both backends);
- server.py: a Qdrant server (a new collection, then an alias switch; the serving name is an alias).
"""
