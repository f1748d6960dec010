"""Content-addressed file store for raw messages and attachments.

Bytes are kept under their sha256, never under a name taken from a mail, so no
attachment name can reach the file system, and the same bytes are kept once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobStore:
    root: Path

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest  # 256 folders: few mkdirs, small folders

    def put(self, data: bytes, *, sync: bool = True) -> str:
        """Write once (temp file, fsync, rename); the same bytes again are a no-op."""
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.exists():
            return digest
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{digest}.{os.getpid()}.{id(data)}.tmp")
        with open(temporary, "wb") as out:
            out.write(data)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, target)
        if sync:
            sync_directory(target.parent)
        return digest

    def put_many(self, blobs: list[bytes]) -> list[str]:
        """Write many, then make them all durable with one file-system sync, not one per file."""
        digests = [self.put(data, sync=False) for data in blobs]
        if digests:
            self.sync([self.path(d) for d in digests])
        return digests

    def sync(self, paths: list[Path]) -> None:
        if not _syncfs(self.root):
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for folder in {p.parent for p in paths}:
                sync_directory(folder)

    def get(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()


def sync_directory(path: Path) -> None:
    """fsync a directory so a rename into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _syncfs(path: Path) -> bool:
    """Linux syncfs(2): every written file and rename on this file system reaches the disk."""
    libc = _libc()
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return libc.syncfs(fd) == 0
    finally:
        os.close(fd)
