"""Crash-safe file writes: write to a temporary name, fsync, rename, fsync the folder.

A reader never sees a half-written file under its final name, whatever point a writer is
killed at; leftovers keep a `.tmp` suffix that writers clean up on their next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
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
    """A temporary name of the writer's own: threads of one process (a flow's concurrent
    tasks) writing the same file must not share it, or one renames the other's away."""
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


def move_folder_into_place(staging: Path, final: Path) -> None:
    """Rename a fully written `staging` folder to `final`, unless a writer racing this one
    (another process, another Dask attempt) renamed its own copy there first: the first
    rename wins and this copy is discarded. Nothing is left at `staging` either way."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.is_dir():
        with contextlib.suppress(OSError):  # a non-empty folder is already there
            os.replace(staging, final)
            fsync_dir(final.parent)
    shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomic(final_path: Path, data: bytes) -> None:
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(final_path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    write_bytes_atomic(final_path, (text + "\n").encode("utf-8"))


_WRITER_PID = re.compile(r"\.(\d+)(?:-\d+)?" + re.escape(TMP_SUFFIX) + "$")


def _writer_may_be_running(name: str) -> bool:
    """Whether the process that named a temporary file may still be writing it: this
    process (another thread), or any live process. Unknown names count as dead."""
    match = _WRITER_PID.search(name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_temp_files(dir_path: Path, *, shared: bool = False) -> int:
    """Delete leftovers of killed writers; returns how many were removed.

    In a `shared` folder (a cache other runs write at the same time) only the files of
    writers that are no longer running are removed: deleting a live writer's temporary file
    would make its rename fail.
    """
    if not dir_path.is_dir():
        return 0
    removed = 0
    for leftover in dir_path.glob(f".*{TMP_SUFFIX}"):
        if shared and _writer_may_be_running(leftover.name):
            continue
        leftover.unlink(missing_ok=True)
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
