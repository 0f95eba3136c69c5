"""What a start-up sweep of the snapshot directory removes: only what an interrupted create left
(its work copy, its unrenamed files, a checksum without its snapshot); anything else stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    Snapshots(Settings(snapshots={"dir": d}), store, "e", 1).sweep()
    assert sorted(p.name for p in d.iterdir()) == sorted(keep)
