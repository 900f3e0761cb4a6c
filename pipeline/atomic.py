"""Crash-safe file writes: write to a temporary name, fsync, rename, fsync the folder.

A reader never sees a half-written file under its final name, whatever point a writer is
killed at; leftovers keep a `.tmp` suffix that writers clean up on their next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def fsync_dir(dir_path: Path) -> None:
    """Persist a rename: the directory entry must reach the disk too."""
    fd = os.open(dir_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(final_path: Path) -> Path:
    """A temporary name of this process and thread: two threads writing the same file (the
    flow's concurrent source tasks) must never rename each other's half-written copy."""
    writer = f"{os.getpid()}-{threading.get_ident()}"
    return final_path.with_name(f".{final_path.name}.{writer}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to final_path."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final_path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final_path)
        fsync_dir(final_path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(final_path: Path, data: bytes) -> None:
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(final_path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    write_bytes_atomic(final_path, (text + "\n").encode("utf-8"))


def remove_temp_files(dir_path: Path) -> int:
    """Delete leftovers of killed writers; returns how many were removed."""
    if not dir_path.is_dir():
        return 0
    removed = 0
    for leftover in dir_path.glob(f".*{TMP_SUFFIX}"):
        leftover.unlink()
        removed += 1
    return removed


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    """Hash of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
