"""SIGKILL inside each stage, then rerun: the run resumes and ends with the shards an
uninterrupted run writes.

One run folder is killed four times in a row, each time while a stage is visibly working
(its hidden `.part-*` shards appearing, the LLM server answering, the teacher's embedding
cache growing), then finished by a fifth run. Every run has a fresh embedding and response
cache of its own chain, so the killed stages really encode and generate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from embedcurate.pipeline.manifest import read_manifest
from testkit.cli import REPO
from testkit.llm_servers import ScriptedServer

from .conftest import write_flow_blend

pytestmark = pytest.mark.slow
SHARD_SETS = ("pairs/beir", "pairs/topics", "pairs/synthetic", "mined", "train")


def write_blend(root: Path, base_url: str) -> Path:
    """Enough rows, one per shard, that each stage spends seconds writing its parts; a slow
    LLM asked one request at a time."""
    generator = f"""
generator:
  backend: openai
  base_url: {base_url}
  model: scripted-llm
  model_kind: base
  num_tasks: 2
  examples_per_task: 3
  concurrency: 1
  retry_backoff_s: 0.01
"""
    return write_flow_blend(root, num_docs=450, extra=generator, rows_per_shard=1)


def hashes(run: Path) -> dict[str, list[str]]:
    return {name: [e.sha256 for e in read_manifest(run / name).shards] for name in SHARD_SETS}


def start_curate(blend: Path, run: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EMBEDCURATE_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "embedcurate", "curate", str(blend), "--out", str(run)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill takes the command's own Prefect server with it
    )


def finish_curate(blend: Path, run: Path, cache: Path) -> None:
    proc = start_curate(blend, run, cache)
    assert proc.wait(timeout=900) == 0


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], stage: str) -> None:
    """SIGKILL the command's process group as soon as `ready()` says the stage is working."""
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, f"curate ended before {stage} could be interrupted"
        assert time.monotonic() < deadline, f"{stage} never started"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def writing_parts(folder: Path) -> bool:
    return any(folder.glob(".part-*.parquet")) and not (folder / "manifest.json").exists()


def cache_segments(cache: Path) -> set[Path]:
    return set(cache.glob("embeddings/*/seg-*.keys.npy"))


class MiningStarted:
    """True once the teacher writes embeddings after generation is done (the generator's
    round-trip filter writes some too, earlier), or mined parts appear."""

    def __init__(self, run: Path, cache: Path) -> None:
        self.run, self.cache = run, cache
        self.before_mining: set[Path] | None = None

    def __call__(self) -> bool:
        if self.before_mining is None:
            if (self.run / ".state" / "generate.json").exists():
                self.before_mining = cache_segments(self.cache)
            return False
        return bool(cache_segments(self.cache) - self.before_mining) or writing_parts(
            self.run / "mined"
        )


def sources_writing(run: Path) -> Callable[[], bool]:
    return lambda: writing_parts(run / "corpus" / "beir") or writing_parts(run / "pairs" / "beir")


def test_sigkill_in_each_stage_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    with ScriptedServer(delay_s=0.15) as server:
        blend = write_blend(tmp_path / "data", server.base_url)
        finish_curate(blend, tmp_path / "reference", tmp_path / "reference-cache")

        run, cache = tmp_path / "killed", tmp_path / "killed-cache"
        state = run / ".state"

        proc = start_curate(blend, run, cache)
        kill_when(proc, sources_writing(run), "sources")
        assert not (state / "sources-beir.json").exists()

        calls_before = server.num_calls
        proc = start_curate(blend, run, cache)
        kill_when(proc, lambda: server.num_calls >= calls_before + 3, "generate")
        assert not (state / "generate.json").exists()
        assert not (run / "pairs" / "synthetic" / "manifest.json").exists()

        proc = start_curate(blend, run, cache)
        kill_when(proc, MiningStarted(run, cache), "mine")
        assert not (state / "mine.json").exists()

        proc = start_curate(blend, run, cache)
        kill_when(proc, lambda: writing_parts(run / "train"), "template")
        assert not (state / "template.json").exists()
        assert not (run / "train" / "manifest.json").exists()

        finish_curate(blend, run, cache)
    assert hashes(run) == hashes(tmp_path / "reference")
