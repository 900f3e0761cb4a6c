"""Corpus encoding spread over workers: the encode plan as part files, one task per part.

Under a Dask or Ray runner the curate flow (`flows.curate`, through the mine stage's `FanOut`
in `pipeline.stages`) writes the plan in one task (`write_plan`), encodes each part in a task
of its own on any worker (`encode_part`), then runs the mine stage, which finds every document
in the embedding cache and builds its index from there. The groups of texts are the plan's
(`pipeline.mining.encode_plan`), so the mined shards are byte-identical to the thread runner's.

Each worker process loads one teacher replica (`teacher.shared_teacher`) and keeps it for the
parts it gets. Encoded groups are committed to the cache as they finish (`encode_cached`): a
worker that dies loses only the groups it had not committed; the retried part encodes the rest.

Part files live in the cache itself, `<cache>/<teacher>/plans/<run>/<plan>/part-NNNNN.parquet`
(one `text` column; `<plan>` a digest of the plan's texts, so a written plan never changes),
and tasks pass their path relative to the cache's root, never texts: a worker whose teacher
resolves to another fingerprint (another dtype on another device) is told so. The cache is
the one folder every worker must share, so a worker that finds no part file sees another
folder, and says so, instead of encoding into a cache the mine stage never reads.
"""

from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedcurate.pipeline.blend import MineStageConfig, TeacherConfig
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.fan_out import PLANS_DIR, PlanWriter, plan_name, worker_threads
from embedcurate.pipeline.mining.embed_cache import text_keys
from embedcurate.pipeline.mining.encode_plan import EncodePlan, planned_part_size
from embedcurate.pipeline.mining.stage import (
    MineInputs,
    cache_folder,
    count_documents,
    encode_part_texts,
    open_cache,
    pool_document_texts,
)
from embedcurate.pipeline.mining.teacher import load_teacher, shared_teacher

logger = logging.getLogger(__name__)

TEXT_COLUMN = "text"


def write_part(path: Path, texts: list[str]) -> None:
    table = pa.table({TEXT_COLUMN: pa.array(texts, type=pa.large_string())})
    pq.write_table(table, path, compression="zstd")


def read_part(path: Path) -> list[str]:
    return pq.read_table(path, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist()


def write_plan(inputs: MineInputs, cfg: MineStageConfig, mined_dir: Path) -> list[str]:
    """Write the encode plan of a mine stage as part files in the cache; returns each part's
    path relative to the cache's root (`<teacher>/plans/...`), in plan order (none when every
    document is cached).

    The plan folder is written once and never changes (`pipeline.fan_out`). The teacher's
    weights are not loaded: planning needs its fingerprint and prefixes only.
    """
    teacher = load_teacher(cfg.teacher)
    cache = open_cache(cfg, teacher, use_cache=True)
    assert cache is not None
    writer = PlanWriter(cache.folder / PLANS_DIR / plan_name(mined_dir))
    part_size = planned_part_size(cfg.mining.encode_part_size, count_documents(inputs))
    plan = EncodePlan(pool_document_texts(inputs, teacher), cache, part_size)
    for texts in plan:
        content = np.int64(len(texts)).tobytes() + text_keys(texts).tobytes()
        writer.add(partial(write_part, texts=texts), content, ".parquet")
    parts = writer.commit()
    logger.info("encode plan: %d texts to encode in %d part(s)", plan.num_texts, len(parts))
    return [path.relative_to(cache.folder.parent).as_posix() for path in parts]


def pinned_to_worker(cfg: TeacherConfig) -> TeacherConfig:
    """The teacher pinned to the threads its worker holds, unless the blend sets them: two
    workers on one machine must not each take every core (embeddings do not depend on the
    thread count, so the plan's fingerprint still matches)."""
    threads = worker_threads()
    if cfg.threads is not None or threads is None:
        return cfg
    return cfg.model_copy(update={"threads": threads})


def encode_part(part: str, cfg: MineStageConfig) -> int:
    """Encode one part of the plan into the cache with this process's teacher; returns how
    many texts it encoded (fewer than the part holds when a first try committed some)."""
    teacher = shared_teacher(pinned_to_worker(cfg.teacher))
    folder = cache_folder(cfg, teacher)
    planned_for = part.split("/", 1)[0]
    if planned_for != folder.name:
        raise ConfigError(
            f"{part}: the plan was made for teacher {planned_for}, but on this worker the "
            f"teacher resolves to {folder.name} (other model files, or another dtype for "
            "another device); workers must resolve the teacher alike: set teacher.device and "
            "teacher.dtype explicitly, or give every worker the same hardware"
        )
    path = folder.parent / part
    if not path.is_file():
        raise ConfigError(
            f"{path}: this worker does not see the encode plan the mine stage wrote in the "
            f"embedding cache folder {folder}; every worker must reach the same folder: set "
            "teacher.cache_dir to a shared folder"
        )
    cache = open_cache(cfg, teacher, use_cache=True)
    assert cache is not None
    texts = read_part(path)
    encoded = 0

    def count(num_texts: int) -> None:
        nonlocal encoded
        encoded += num_texts

    encode_part_texts(texts, teacher, cache, cfg, f"encode {part}", on_encoded=count)
    logger.info("%s: %d of %d texts encoded", part, encoded, len(texts))
    return encoded


def remove_plan(cfg: MineStageConfig, mined_dir: Path) -> None:
    """Delete a mine output's plan files once the stage has read every part from the cache."""
    if cfg.teacher.cache:
        folder = cache_folder(cfg, load_teacher(cfg.teacher)) / PLANS_DIR / plan_name(mined_dir)
        shutil.rmtree(folder, ignore_errors=True)
