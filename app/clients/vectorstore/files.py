"""Copying an embedded shard's directory without inflating it.

The engine preallocates its write-ahead log and payload pages as sparse files (a fresh shard of
2,000 points is 178 MB long and 3.5 MB on disk). `shutil.copytree` writes every hole as zeros, so
each copy costs the full length on disk. `copy_tree` copies only the data extents (SEEK_DATA /
SEEK_HOLE) and keeps the holes holes.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

_CHUNK = 1 << 20


def copy_sparse(src: str, dst: str, *, follow_symlinks: bool = True) -> str:
    """Copy one file's bytes and metadata; holes in `src` stay holes in `dst`.
    The signature is `shutil.copy2`'s, so this is a `copytree` copy function."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from here to the end
                    break
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no hole support: copy all
                    fout.close()
                    return str(shutil.copy2(src, dst, follow_symlinks=follow_symlinks))
                raise
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            left = end - start
            while left > 0:
                block = fin.read(min(_CHUNK, left))
                if not block:  # the file shrank under us: copy what is there
                    break
                fout.write(block)
                left -= len(block)
            pos = end
        fout.truncate(size)
    shutil.copystat(src, dst, follow_symlinks=follow_symlinks)
    return dst


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a directory tree (a shard) to `dst`, which must not exist, keeping files sparse."""
    shutil.copytree(src, dst, copy_function=copy_sparse)
    return dst
