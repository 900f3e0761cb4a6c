"""`run_export`: a train shard set into one trainer's layout, as a shard set of its own.

The export is written into a hidden temporary folder beside `out_dir` (shards, manifest,
report, card, Croissant metadata) and renamed to `out_dir` only when all of it is on disk, so
a failed or killed export leaves nothing under the name the user gave; an existing `out_dir`
is refused rather than overwritten. Every train row is counted: kept, or dropped for a reason
(`other_stage`, `fewer_negatives`, `no_negatives`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedcurate.pipeline.errors import EmbedCurateError, InputError
from embedcurate.pipeline.export import flagembedding, sentence_transformers, tevatron
from embedcurate.pipeline.export.card import write_export_card
from embedcurate.pipeline.export.types import ExportConfig, ExportRow, TrainerFormat
from embedcurate.pipeline.manifest import Manifest
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import ShardWriter, iter_shards, require_valid

logger = logging.getLogger(__name__)

FORMATS: dict[str, TrainerFormat] = {
    trainer.name: trainer
    for trainer in (sentence_transformers.FORMAT, flagembedding.FORMAT, tevatron.FORMAT)
}
EXPORT_KIND_PREFIX = "export/"
EXPORT_TMP_SUFFIX = ".export.tmp"
MinedIds = dict[str, tuple[str | None, str | None, list[str]]]


def _row_counts(train_dir: Path, manifest: Manifest, cfg: ExportConfig) -> tuple[int, int]:
    """(rows of the chosen stage, most negatives any of them has), reading two columns."""
    num_rows = most = 0
    for entry in manifest.shards:
        table = pq.read_table(train_dir / entry.file, columns=["stage", "negatives"])
        lengths = pc.list_value_length(table["negatives"]).to_pylist()
        for stage, length in zip(table["stage"].to_pylist(), lengths, strict=True):
            if cfg.wants_stage(stage):
                num_rows += 1
                most = max(most, length or 0)
    return num_rows, most


def resolve_num_negatives(train_dir: Path, manifest: Manifest, cfg: ExportConfig) -> int:
    """`--num-negatives`, or the most any chosen row has; refused when no row has that many."""
    num_rows, most = _row_counts(train_dir, manifest, cfg)
    stage_words = "" if cfg.stage == "all" else f"stage-{cfg.stage} "
    if num_rows == 0:
        raise EmbedCurateError(
            f"{train_dir}: holds no {stage_words}rows to export; give another --stage"
        )
    if cfg.num_negatives is None:
        return most
    if cfg.num_negatives > most:
        raise EmbedCurateError(
            f"{train_dir}: --num-negatives {cfg.num_negatives} is more than any "
            f"{stage_words}row has (at most {most}); give --num-negatives {most} or fewer"
        )
    return cfg.num_negatives


def default_mined_dir(train_dir: Path) -> Path:
    """Where a run keeps the mined set its train set was templated from: `RUN/mined/`."""
    return train_dir.parent / "mined"


def load_mined_ids(mined_dir: Path, train_dir: Path) -> MinedIds:
    """example_id -> (query_id, positive_id, negative_ids) from the mined set.

    Only ids are held in memory (one small tuple per row), never the texts.
    """
    if not (mined_dir / "manifest.json").is_file():
        raise EmbedCurateError(
            f"{train_dir}: the tevatron export needs the document ids of the mined set, and "
            f"{mined_dir} holds none; give the run's mined folder with --mined DIR"
        )
    require_valid(mined_dir, TableKind.MINED)
    ids: MinedIds = {}
    columns = ["example_id", "query_id", "positive_id", "negative_ids"]
    for table in iter_shards(mined_dir, TableKind.MINED, validate=False):
        for row in table.select(columns).to_pylist():
            ids[row["example_id"]] = (row["query_id"], row["positive_id"], row["negative_ids"])
    return ids


def _short_reason(row: dict[str, Any], num_negatives: int, cfg: ExportConfig) -> str | None:
    """Why a row with fewer than `num_negatives` negatives is dropped, or None to keep it."""
    have = len(row["negatives"])
    if have >= num_negatives:
        return None
    if cfg.on_short == "drop":
        return "fewer_negatives"
    return "no_negatives" if have == 0 else None


def export_records(
    train_dir: Path,
    trainer: TrainerFormat,
    cfg: ExportConfig,
    num_negatives: int,
    report: StageReport,
    mined_ids: MinedIds | None,
) -> Iterator[list[dict[str, Any]]]:
    """The trainer's records, one list per train shard, with every row counted in `report`."""
    for table in iter_shards(train_dir, TableKind.TRAIN, validate=False):
        records = []
        for row in table.to_pylist():
            source = row["source"]
            report.read(source)
            reason = "other_stage" if not cfg.wants_stage(row["stage"]) else None
            reason = reason or _short_reason(row, num_negatives, cfg)
            if reason:
                report.drop(source, reason)
                continue
            ids = None
            if mined_ids is not None:
                ids = mined_ids.get(row["example_id"])
                if ids is None:
                    raise InputError(
                        train_dir,
                        f"example {row['example_id']!r} is not in the mined set; give the mined "
                        "folder this train set was made from with --mined DIR",
                    )
            export_row = ExportRow.from_train_row(
                row, strip_instruction=cfg.strip_instruction, ids=ids
            )
            if trainer.fixed_width:
                export_row = export_row.padded(num_negatives)
            records.append(trainer.record(export_row, num_negatives))
            report.keep(source)
        yield records


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary folders of earlier exports to the same `out_dir` that were killed midway."""
    if not out_dir.parent.is_dir():
        return
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*{EXPORT_TMP_SUFFIX}"):
        logger.info("removing %s, left by an export that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _refuse_existing(out_dir: Path) -> None:
    if out_dir.exists():
        raise EmbedCurateError(
            f"{out_dir}: already exists; export writes a new folder (give another --out or "
            "remove it)"
        )


def run_export(
    train_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig,
    mined_dir: str | Path | None = None,
) -> StageReport:
    """Export the TRAIN set at `train_dir` to `out_dir` in `cfg.format`'s layout."""
    train_dir, out_dir = Path(train_dir), Path(out_dir)
    trainer = FORMATS[cfg.format]
    _refuse_existing(out_dir)
    manifest = require_valid(train_dir, TableKind.TRAIN)
    num_negatives = resolve_num_negatives(train_dir, manifest, cfg)
    mined_ids = None
    if trainer.needs_ids:
        mined_ids = load_mined_ids(
            Path(mined_dir) if mined_dir else default_mined_dir(train_dir), train_dir
        )
    report = StageReport(stage="export", out_dir=str(out_dir))
    _remove_leftovers(out_dir)
    tmp_dir = out_dir.parent / f".{out_dir.name}.{os.getpid()}{EXPORT_TMP_SUFFIX}"
    try:
        writer = ShardWriter(
            tmp_dir,
            EXPORT_KIND_PREFIX + trainer.name,
            schema=trainer.schema(num_negatives),
            file_format=trainer.file_format,
            subdir=trainer.data_subdir,
            rows_per_shard=cfg.rows_per_shard,
            config={**cfg.model_dump(), "num_negatives": num_negatives},
            extra={
                "source": {
                    "path": os.path.relpath(train_dir.resolve(), out_dir.resolve().parent),
                    "kind": manifest.kind,
                    "num_rows": manifest.num_rows,
                    "content_hash": manifest.content_hash,
                    "config_hash": manifest.config_hash,
                },
            },
        )
        with writer:
            for records in export_records(
                train_dir, trainer, cfg, num_negatives, report, mined_ids
            ):
                writer.write_rows(records)
        assert writer.manifest is not None
        report.details = {"format": trainer.name, "num_negatives": num_negatives}
        report.finish().save(tmp_dir)
        write_export_card(tmp_dir, out_dir, writer.manifest, manifest, trainer, report, train_dir)
        _refuse_existing(out_dir)
        tmp_dir.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("exported %d of %d rows to %s", report.num_kept, report.num_in, out_dir)
    return report
