"""`manifest.json`: what a complete shard set holds, and the proof that it is complete.

The manifest is written last, atomically, after every shard it lists is on disk under its
final name. A folder without one is an unfinished write and readers refuse it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from embedcurate.pipeline import __version__
from embedcurate.pipeline.atomic import sha256_json, write_json_atomic
from embedcurate.pipeline.errors import ShardSetError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ShardEntry:
    file: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    kind: str
    schema_fingerprint: str
    schema_version: int
    shards: list[ShardEntry]
    config: dict[str, Any]
    config_hash: str
    code_version: str
    seeds: dict[str, int] = field(default_factory=dict)
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    # The total as written in the file (None for a manifest built in memory); validation
    # checks it against the sum of the shards' rows.
    recorded_num_rows: int | None = field(default=None, compare=False)

    @property
    def num_rows(self) -> int:
        return sum(entry.rows for entry in self.shards)

    @property
    def content_hash(self) -> str:
        """One hash for the whole set: over each shard's name and sha256, in order."""
        text = "\n".join(f"{entry.file} {entry.sha256}" for entry in self.shards)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        del payload["recorded_num_rows"]
        payload["num_rows"] = self.num_rows
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Manifest:
        data = {k: v for k, v in payload.items() if k != "num_rows"}
        data["recorded_num_rows"] = payload.get("num_rows")
        data["shards"] = [ShardEntry(**entry) for entry in data["shards"]]
        return cls(**data)


def config_hash(config: dict[str, Any]) -> str:
    return sha256_json(config)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus the git commit (and `-dirty`) when run from a checkout."""
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'-dirty' if dirty else ''}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_manifest(shard_dir: Path, manifest: Manifest) -> Path:
    path = shard_dir / MANIFEST_NAME
    write_json_atomic(path, manifest.to_dict())
    return path


def read_manifest(shard_dir: str | Path) -> Manifest:
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ShardSetError(shard_dir, [f"{MANIFEST_NAME} is missing: the shard set is incomplete"])
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ShardSetError(shard_dir, [f"{MANIFEST_NAME} is unreadable: {exc}"]) from exc
