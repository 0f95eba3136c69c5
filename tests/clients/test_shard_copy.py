"""Copying a shard keeps its bytes and its holes: a copy per test must not cost the file's length
on disk (a run of hundreds of copies once filled the disk of a CI machine)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.clients.vectorstore.files import copy_tree

BLOCK = 4096


def _blocks(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


extents = st.lists(
    st.tuples(st.integers(0, 64 * BLOCK), st.binary(min_size=1, max_size=3 * BLOCK)), max_size=6
)


@settings(max_examples=60, deadline=None)
@given(layout=extents, tail=st.integers(0, 256 * BLOCK))
def test_a_copy_has_the_same_bytes_and_no_more_disk_than_the_source(
    layout: list[tuple[int, bytes]], tail: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "sub").mkdir(parents=True)
        f = src / "sub" / "data.bin"
        with open(f, "wb") as out:
            for offset, data in layout:
                out.seek(offset)
                out.write(data)
            out.truncate(max(out.tell(), tail))
        (src / "empty").write_bytes(b"")
        dst = copy_tree(src, Path(tmp) / "dst")

        assert _tree_bytes(dst) == _tree_bytes(src)
        assert os.path.getsize(dst / "sub" / "data.bin") == os.path.getsize(f)
        # holes stay holes: the copy takes no more blocks than the source (one block of slack
        # for an extent the file system rounded differently)
        assert _blocks(dst / "sub" / "data.bin") <= _blocks(f) + BLOCK


def test_a_copied_shard_is_identical_and_stays_sparse(built_collection: Path, tmp_path: Path) -> None:
    dst = copy_tree(built_collection, tmp_path / "copy")
    assert _tree_bytes(dst) == _tree_bytes(built_collection)
    files = [p for p in built_collection.rglob("*") if p.is_file()]
    length = sum(p.stat().st_size for p in files)
    on_disk = sum(_blocks(p) for p in dst.rglob("*") if p.is_file())
    source_on_disk = sum(_blocks(p) for p in files)
    # the engine preallocates: the shard is far longer than what it holds
    assert length > 10 * source_on_disk
    assert on_disk <= source_on_disk + BLOCK * len(files)
