"""Content-addressed response cache: (prompt, model, sampling, schema) -> response.

One SQLite file (stdlib, write-ahead log, `synchronous=FULL`): each finished response is
committed on its own as soon as it arrives, so a run killed at any point keeps every call
that finished, and a resumed or repeated run pays only for the rest. Keys are sha256 of the
canonical request payload; editing a template, switching models or changing a sampling
parameter changes the key, so a stale response is never served for a new request.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from embedcurate.pipeline.atomic import sha256_json
from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GeneratorBackend,
)
from embedcurate.pipeline.manifest import now_iso
from embedcurate.pipeline.packaged import cache_root

logger = logging.getLogger(__name__)

RESPONSES_FILE = "responses.sqlite"


def cache_key(request: GenerationRequest, model_identity: str) -> str:
    return sha256_json(request.cache_payload(model_identity))


def generation_folder(cache_dir: Path) -> Path:
    """The folder of a cache directory's response cache (and of generation plans)."""
    return Path(cache_dir) / "generation"


def generator_folder(cfg: GeneratorConfig) -> Path:
    """Where a generator's responses and generation plans live (`generator.cache_dir`)."""
    return generation_folder(cfg.cache_dir or cache_root())


def response_cache(cfg: GeneratorConfig) -> ResponseCache:
    """The response cache a generator's blend section names."""
    return ResponseCache(cfg.cache_dir or cache_root())


class ResponseStore(Protocol):
    """Where a `CachingGenerator` looks responses up and keeps new ones."""

    def get(self, key: str) -> GenerationResult | None: ...

    def put(self, key: str, model_identity: str, result: GenerationResult) -> None: ...


class ResponseCache:
    """Thread-safe store of finished responses in `cache_dir/generation/responses.sqlite`.

    `part_file(path)` opens another file: a part of the work on a worker (`shard_generate`)
    writes to a file of its own.
    """

    def __init__(self, cache_dir: Path) -> None:
        self._open(generation_folder(cache_dir) / RESPONSES_FILE, journal="WAL")

    @classmethod
    def part_file(cls, path: Path) -> ResponseCache:
        """A cache in `path` with a rollback journal rather than the write-ahead log: one
        process writes it, and a folder several machines share (NFS) cannot hold a WAL."""
        cache = cls.__new__(cls)
        cache._open(path, journal="DELETE")
        return cache

    def _open(self, path: Path, journal: str) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA journal_mode={journal}")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                "key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL, "
                "created_at TEXT NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise GenerationError(
                f"{self.path}: response cache is unreadable ({exc}); move it away to start over"
            ) from exc

    def get(self, key: str) -> GenerationResult | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT response FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else GenerationResult.from_dict(json.loads(row[0]), cached=True)

    def put(self, key: str, model_identity: str, result: GenerationResult) -> None:
        payload = json.dumps(result.to_dict(), ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, response, created_at) "
                "VALUES (?, ?, ?, ?)",
                (key, model_identity, payload, now_iso()),
            )

    def absorb(self, other: Path) -> int:
        """Copy the responses of another cache file (a part's) that this one lacks; returns
        how many it copied. One transaction: a crash copies all or nothing."""
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("ATTACH DATABASE ? AS part", (str(other),))
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO responses SELECT key, model, response, created_at "
                    "FROM part.responses"
                )
            finally:
                self._conn.execute("DETACH DATABASE part")
            return self._conn.total_changes - before

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass
class CallStats:
    """What generation cost: requests asked, answered from cache, sent, tokens and time."""

    num_requests: int = 0
    num_cache_hits: int = 0
    num_backend_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    backend_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        per_s = self.completion_tokens / self.backend_seconds if self.num_backend_calls else None
        return {
            "num_requests": self.num_requests,
            "num_cache_hits": self.num_cache_hits,
            "num_backend_calls": self.num_backend_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "backend_seconds": round(self.backend_seconds, 3),
            "completion_tokens_per_s": None if per_s is None else round(per_s, 2),
        }


class CachingGenerator:
    """A backend behind the cache: only misses reach the backend, each cached on arrival."""

    def __init__(
        self, backend: GeneratorBackend, cache: ResponseStore, *, progress: bool = False
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.progress = progress
        self.stats = CallStats()

    def generate(
        self, requests: Sequence[GenerationRequest], desc: str = "generate"
    ) -> list[GenerationResult]:
        identity = self.backend.cache_identity
        keys = [cache_key(request, identity) for request in requests]
        results: list[GenerationResult | None] = [self.cache.get(key) for key in keys]
        misses = [index for index, result in enumerate(results) if result is None]
        self.stats.num_requests += len(requests)
        self.stats.num_cache_hits += len(requests) - len(misses)
        bar = self._progress_bar(len(requests), len(requests) - len(misses), desc)

        def on_result(miss_index: int, result: GenerationResult) -> None:
            index = misses[miss_index]
            self.cache.put(keys[index], identity, result)
            results[index] = result
            self.stats.num_backend_calls += 1
            self.stats.prompt_tokens += result.prompt_tokens
            self.stats.completion_tokens += result.completion_tokens
            if bar is not None:
                bar.update(1)

        started = time.perf_counter()
        try:
            if misses:
                self.backend.generate([requests[index] for index in misses], on_result)
        finally:
            self.stats.backend_seconds += time.perf_counter() - started
            if bar is not None:
                bar.close()
        missing = [index for index, result in enumerate(results) if result is None]
        if missing:
            raise GenerationError(
                f"{self.backend.name} backend returned no response for {len(missing)} of "
                f"{len(requests)} request(s) (first: #{missing[0]})"
            )
        return [result for result in results if result is not None]

    def _progress_bar(self, total: int, done: int, desc: str) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=done, desc=desc, unit="call")
