"""Skip a stage whose inputs and settings have not changed since it last finished.

A stage's key hashes its name, its blend section (`section_settings`: the section without
machine-local settings, plus the size and time of every local file it names) and the
manifests of its input shard sets, so an upstream change reruns it and an unrelated
change does not. When a stage
finishes, its key and output folders are recorded in `OUT/.state/<stage>.json`; a rerun
with the same key whose outputs still validate is skipped. Keys live beside the run rather
than in Prefect's result store so they survive a killed process and a different API server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedcurate.pipeline import __version__
from embedcurate.pipeline.atomic import sha256_json, write_json_atomic
from embedcurate.pipeline.blend import portable_settings
from embedcurate.pipeline.manifest import MANIFEST_NAME
from embedcurate.pipeline.shards import validate_shards
from embedcurate.pipeline.stages import local_paths

STATE_DIR = ".state"


def manifest_digest(shard_dir: Path) -> dict[str, Any]:
    """What identifies a shard set's content: its shard hashes and config hash."""
    payload = json.loads((shard_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return {
        "kind": payload["kind"],
        "config_hash": payload["config_hash"],
        "shards": [entry["sha256"] for entry in payload["shards"]],
    }


def stage_key(stage: str, settings: Any, input_dirs: list[Path]) -> str:
    return sha256_json(
        {
            "stage": stage,
            "version": __version__,
            "settings": settings,
            "inputs": [manifest_digest(d) for d in sorted(input_dirs)],
        }
    )


@dataclass(frozen=True)
class StageRecord:
    key: str
    outputs: list[str]


def _record_path(run_dir: Path, stage: str) -> Path:
    return run_dir / STATE_DIR / f"{stage}.json"


def is_fresh(run_dir: Path, stage: str, key: str) -> bool:
    """True when the stage last finished with this key and its outputs are still valid."""
    path = _record_path(run_dir, stage)
    if not path.is_file():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("key") != key:
        return False
    return all(not validate_shards(Path(out)) for out in record.get("outputs", []))


def mark_done(run_dir: Path, stage: str, key: str, outputs: list[Path]) -> None:
    write_json_atomic(
        _record_path(run_dir, stage), {"key": key, "outputs": [str(o) for o in outputs]}
    )


def files_fingerprint(path: Path | None) -> list[tuple[str, int, int]]:
    """(file, size, mtime_ns) for a source file or every file under a folder, named
    relative to it (so the key does not depend on where the data sits).

    Local data edited in place changes the stage key, so the stage reruns.
    """
    if path is None or not path.exists():
        return []
    if path.is_file():
        return [(path.name, path.stat().st_size, path.stat().st_mtime_ns)]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def section_settings(section: Any) -> dict[str, Any]:
    """What a stage's skip key hashes of its section: the portable settings and the files."""
    return {
        "config": portable_settings(section),
        "files": [files_fingerprint(path) for path in local_paths(section)],
    }


def stage_is_fresh(run_dir: Path, stage: str, settings: Any, input_dirs: list[Path]) -> bool:
    """Whether `run_once` would skip the stage now (work planned ahead of it can be skipped too)."""
    return is_fresh(run_dir, stage, stage_key(stage, settings, input_dirs))


def run_once(
    run_dir: Path,
    stage: str,
    settings: Any,
    input_dirs: list[Path],
    outputs: list[Path],
    run: Any,
    *,
    always: bool = False,
) -> bool:
    """Call `run()` unless the stage is fresh (or `always`); returns True when it ran."""
    key = stage_key(stage, settings, input_dirs)
    if not always and is_fresh(run_dir, stage, key):
        return False
    run()
    mark_done(run_dir, stage, key, [o for o in outputs if (o / MANIFEST_NAME).exists()])
    return True
