"""One snapshot file: a gzip'd tar (level 1) of a manifest and a copy of the shard directory.

The engine preallocates big sparse files; tar writes their holes as zeros and gzip at level 1
turns those runs into almost nothing, so a 178 MB (3.5 MB on disk) shard packs into about 3 MB.
Unpacking writes zero blocks back as holes, so a restored shard costs what the original did.
The manifest is the first member, so reading it decompresses only the start of the file.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any

import orjson

from app.errors import DependencyUnavailable, SnapshotInvalid

FORMAT = 1
MAX_MANIFEST_BYTES = 64 * 1024
MANIFEST = "manifest.json"
SHARD = "shard"
_BLOCK = 1 << 16
_ZEROS = bytes(_BLOCK)
# what a broken file raises while it is read as a gzip'd tar
_BROKEN = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError)


def pack(shard: Path, manifest: dict[str, Any], dest: Path) -> None:
    """Write the snapshot file `dest` (fsync'd): the manifest, then every file of `shard`."""
    with open(dest, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tar:
            data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o644, int(manifest["created_at"])
            tar.addfile(info, io.BytesIO(data))
            tar.add(shard, arcname=SHARD)
        raw.flush()
        os.fsync(raw.fileno())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a snapshot file; SnapshotInvalid when there is none or it is not ours."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise SnapshotInvalid("the file is not a snapshot: no manifest first")
            if first.size > MAX_MANIFEST_BYTES:  # ours are a few hundred bytes: never read a bomb
                raise SnapshotInvalid("the snapshot's manifest is too large")
            f = tar.extractfile(first)
            assert f is not None
            manifest = orjson.loads(f.read())
    except _BROKEN as exc:
        raise SnapshotInvalid("the snapshot file is not a readable gzip'd tar") from exc
    except orjson.JSONDecodeError as exc:
        raise SnapshotInvalid("the snapshot's manifest is not JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotInvalid(f"the snapshot's format is not {FORMAT}")
    for key, kind in (("collection", str), ("embedder_id", str), ("embedder_dim", int), ("points", int)):
        if not isinstance(manifest.get(key), kind):
            raise SnapshotInvalid(f"the snapshot's manifest lacks {key}")
    return manifest


def unpack(path: Path, dest: Path) -> None:
    """Unpack the shard of snapshot `path` into the new directory `dest`, zero blocks as holes,
    every file fsync'd. Only regular files and directories under `shard/` are taken."""
    dest.mkdir(parents=True)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                target = _inside(dest, member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    _write_sparse(src, target, member.size)
                else:
                    raise SnapshotInvalid("the snapshot holds something other than files and directories")
    except _BROKEN as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # the disk, not the snapshot: say so (503), never "corrupt"
            raise DependencyUnavailable("disk", "no space left to unpack the snapshot") from exc
        raise SnapshotInvalid("the snapshot file is truncated or corrupt") from exc
    for root, _dirs, _files in os.walk(dest):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)


def _inside(dest: Path, name: str) -> Path:
    parts = Path(name).parts
    if not parts or parts[0] != SHARD or any(p in ("..", "") for p in parts) or Path(name).is_absolute():
        raise SnapshotInvalid("the snapshot holds a path outside its shard")
    return dest.joinpath(*parts[1:])


def _write_sparse(src: io.BufferedReader | Any, target: Path, size: int) -> None:
    with open(target, "wb") as out:
        left = size
        while left > 0:
            block = src.read(min(_BLOCK, left))
            if not block:
                raise SnapshotInvalid("the snapshot file is truncated")
            if block == _ZEROS[: len(block)]:
                out.seek(len(block), os.SEEK_CUR)  # a hole, as in the original
            else:
                out.write(block)
            left -= len(block)
        out.truncate(size)
        out.flush()
        os.fsync(out.fileno())


def recorded_sum(path: Path) -> str | None:
    """The sha256 recorded beside a snapshot (sha256sum format); None if none can be read."""
    try:
        text = path.with_name(path.name + ".sha256").read_text()
    except (OSError, UnicodeDecodeError):  # missing, a directory, not text: no checksum
        return None
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None
