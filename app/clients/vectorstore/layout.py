"""Where the embedded engine's serving shard lives, and who owns it.

A collection's shard is `path/<collection>` until a restore (or a reindex) makes another directory
beside it the serving one. The pointer file `path/<collection>.current` then names that directory;
it is replaced atomically (tmp, fsync, rename, fsync of the directory), so a kill at any moment
leaves either the old name or the new one. Directories of the collection that the pointer does not
name are leftovers of an interrupted or finished swap; the owner removes them at start-up, except
the one `path/<collection>.previous` names: the shard a reindex replaced, kept for a rollback.

The owner of a collection (the gateway, or the snapshots CLI of a stopped gateway) holds an
exclusive lock on `path/.<collection>.lock` for as long as it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from pathlib import Path

from app.clients.vectorstore.shared import DEPENDENCY, EMBEDDER_KEY
from app.errors import DependencyRejected

POINTER_SUFFIX = ".current"
PREVIOUS_SUFFIX = ".previous"
# in the shard directory, beside the engine's files (so a copy of the shard carries it): what the
# gateway records of the collection, today the id of the embedder that made its vectors
GATEWAY_FILE = "gateway.json"
# a shard directory beside the original one: `<collection>@<stamp>` (`.tmp` while unpacking)
_SIBLING = re.compile(r"^(?P<collection>[A-Za-z0-9_\-]{1,128})@[0-9A-Za-z]{1,40}(\.tmp)?$")


class CollectionLocked(Exception):
    """Another process owns the collection."""


def pointer_file(path: Path, collection: str) -> Path:
    return path / f"{collection}{POINTER_SUFFIX}"


def serving_dir(path: Path, collection: str) -> Path:
    """The directory the collection is served from: the pointer's target, else `path/<collection>`."""
    return _named(path, collection, POINTER_SUFFIX) or path / collection


def previous_dir(path: Path, collection: str) -> Path | None:
    """The shard a reindex replaced and keeps for a rollback, if one is kept and still there."""
    found = _named(path, collection, PREVIOUS_SUFFIX)
    return found if found is not None and found.is_dir() else None


def _named(path: Path, collection: str, suffix: str) -> Path | None:
    try:
        name = (path / f"{collection}{suffix}").read_text().strip()
    except FileNotFoundError:
        return None
    if name != collection and not (_SIBLING.match(name) and not name.endswith(".tmp")):
        raise ValueError(f"pointer file of {collection!r} names {name!r}, not a shard directory of it")
    return path / name


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, data: bytes) -> None:
    """Replace `target` with `data`: readers (and a restart after a kill) see the old or the new."""
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def set_serving_dir(path: Path, collection: str, directory: Path, previous: Path | None = None) -> None:
    """Make `directory` (beside the original shard) the serving one: the commit point of a swap.
    `previous` (the shard serving until now) is kept for a rollback; without it none is kept. It
    is named before the pointer moves, so a kill between the two leaves it named and serving."""
    if directory.parent != path or (previous is not None and previous.parent != path):
        raise ValueError("a serving directory must sit beside the collection's original one")
    kept = path / f"{collection}{PREVIOUS_SUFFIX}"
    if previous is not None:
        write_atomically(kept, previous.name.encode() + b"\n")
    write_atomically(pointer_file(path, collection), directory.name.encode() + b"\n")
    if previous is None and kept.exists():
        kept.unlink()
        fsync_dir(path)


def new_sibling(path: Path, collection: str, stamp: str) -> Path:
    return path / f"{collection}@{stamp}"


def sweep(path: Path, collection: str) -> list[Path]:
    """Remove every shard directory of `collection` the pointer does not name (owner only)."""
    if not path.is_dir():
        return []
    serving = serving_dir(path, collection)
    kept = previous_dir(path, collection)
    gone = []
    for entry in path.iterdir():
        m = _SIBLING.match(entry.name)
        stale = (m is not None and m["collection"] == collection) or entry.name == collection
        if stale and entry not in (serving, kept) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry)
    return gone


class OwnerLock:
    """The exclusive lock on a collection's directory; released on close (or when the process dies)."""

    def __init__(self, path: Path, collection: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path / f".{collection}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise CollectionLocked(
                f"collection {collection!r} at {path} is in use by another process"
            ) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_embedder(shard: Path) -> str | None:
    """The embedder id the shard records, None if it records none (no file). A file that cannot
    be read or holds no id is refused (DependencyRejected), never taken for "none"."""
    path = shard / GATEWAY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise _unreadable(f"{type(exc).__name__}") from None
    stored = data.get(EMBEDDER_KEY) if isinstance(data, dict) else None
    if not isinstance(stored, str) or not stored:
        raise _unreadable("no embedder id in it")
    return stored


def _unreadable(why: str) -> DependencyRejected:
    return DependencyRejected(
        DEPENDENCY,
        f"the collection's {GATEWAY_FILE} cannot be used ({why}): restore it from a snapshot, "
        "or remove it to record the current embedder",
    )


def record_embedder(shard: Path, embedder: str) -> None:
    """Record the shard's embedder id, replacing the file atomically."""
    tmp = shard / (GATEWAY_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({EMBEDDER_KEY: embedder}, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(shard / GATEWAY_FILE)
    fsync_dir(shard)
