"""What a start-up sweep of the snapshot directory removes: only what an interrupted create left
(its work copy, its unrenamed files, a checksum without its snapshot); anything else stays. And
what the sweep of the collection's shard directories spares: the serving and the kept shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.clients.vectorstore.layout import previous_dir, set_serving_dir, sweep
from app.settings import Settings
from app.snapshots.service import Snapshots


class NoStore:
    collection = "rag_docs"


def test_sweep_removes_only_what_an_interrupted_create_left(tmp_path: Path) -> None:
    d = tmp_path / "snaps"
    (d / ".work-rag_docs-20260101T000000Z-abcdef" / "shard").mkdir(parents=True)
    whole = "rag_docs-20260102T000000Z-abcdef"
    keep = [f"{whole}.tar.gz", f"{whole}.tar.gz.sha256", ".rag_docs.lock", "notes.txt", "x.tar.gz.sha256"]
    gone = [
        ".rag_docs-20260103T000000Z-abcdef.tar.gz.tmp",
        ".rag_docs-20260103T000000Z-abcdef.tar.gz.sha256.tmp",
    ]
    gone += ["rag_docs-20260104T000000Z-abcdef.tar.gz.sha256"]  # its snapshot never got renamed in
    for name in keep + gone:
        (d / name).write_text("x")
    store: Any = NoStore()
    Snapshots(Settings(snapshots={"dir": d}), store, None).sweep()  # files only: no embedder
    assert sorted(p.name for p in d.iterdir()) == sorted(keep)


def test_shard_sweep_spares_the_serving_and_the_kept_shard(tmp_path: Path) -> None:
    """The pointer names the serving shard, `.previous` the one a reindex keeps for a rollback;
    every other shard directory of the collection goes (another collection's stays)."""
    q = tmp_path / "qdrant"
    names = ["rag_docs", "rag_docs@1a", "rag_docs@2b", "rag_docs@3c", "rag_docs@4d.tmp", "other@1a"]
    for name in names:
        (q / name).mkdir(parents=True)
    set_serving_dir(q, "rag_docs", q / "rag_docs@2b", previous=q / "rag_docs@1a")
    assert previous_dir(q, "rag_docs") == q / "rag_docs@1a"
    assert sorted(p.name for p in sweep(q, "rag_docs")) == ["rag_docs", "rag_docs@3c", "rag_docs@4d.tmp"]
    assert sorted(p.name for p in q.iterdir() if p.is_dir()) == ["other@1a", "rag_docs@1a", "rag_docs@2b"]
    # a restore names no previous: the kept shard is no longer spared
    set_serving_dir(q, "rag_docs", q / "rag_docs@1a")
    assert previous_dir(q, "rag_docs") is None
    assert not (q / "rag_docs.previous").exists()
    assert [p.name for p in sweep(q, "rag_docs")] == ["rag_docs@2b"]
