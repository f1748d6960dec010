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
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobStore:
    root: Path

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest  # 256 folders: few mkdirs, small folders

    def put(self, data: bytes, *, sync: bool = True, digest: str | None = None) -> str:
        """Write once (temp file, fsync, rename); the same bytes again are a no-op.
        `digest`: the bytes' sha256, when the caller has it already. Plain os calls, few of
        them: each lets go of the interpreter lock, and the write-behind thread has to win
        it back from the parsing thread every time."""
        digest = digest or sha256_hex(data)
        target = self.path(digest)
        if os.path.exists(target):
            return digest
        temporary = target.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(temporary, _CREATE, 0o644)
        except FileNotFoundError:  # the first blob of its folder
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, _CREATE, 0o644)
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once, save for a signal
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        if sync:
            sync_directory(target.parent)
        return digest

    def write_behind(self, blobs: list[bytes]) -> tuple[list[str], Future[None]]:
        """The digests at once; the files are written by a background thread (file creation
        is mostly kernel time, so it runs beside the caller's parsing). Durable only after
        the future's result() and then sync()."""
        digests = [sha256_hex(data) for data in blobs]
        return digests, _writer().submit(self._write_all, list(zip(digests, blobs, strict=True)))

    def _write_all(self, blobs: list[tuple[str, bytes]]) -> None:
        for digest, data in blobs:
            self.put(data, sync=False, digest=digest)

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


_writers: dict[int, ThreadPoolExecutor] = {}  # one per process: a forked child makes its own
_writers_lock = threading.Lock()


def _writer() -> ThreadPoolExecutor:
    with _writers_lock:
        pid = os.getpid()
        if pid not in _writers:
            _writers[pid] = ThreadPoolExecutor(1, thread_name_prefix="blob-writer")
        return _writers[pid]


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
