"""The figures a data card shows, computed from a shard set one shard at a time.

Memory stays bounded by one shard plus small accumulators: counts keyed by source, stage,
task and label; scores and text lengths as exact counts of quantised values (a score rounded
to 1e-3, a length in characters), from which histograms and quantiles are drawn; and for
the in-batch collision report one 64-bit hash per stage-1 text (16 bytes per row).

Works on any table of the data contract that has the columns it needs: TRAIN (texts carry
their instruction prefix, whose length is recorded and removed before measuring), MINED and
PAIRS (no scores; negatives are the `given_negatives`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from embedcurate.pipeline.redact import scrub_text
from embedcurate.pipeline.shards import iter_shards, read_manifest

logger = logging.getLogger(__name__)

SCORE_QUANTUM = 1e-3
SAMPLE_TEXT_CHARS = 240
NUM_SAMPLES = 4
SAMPLE_NEGATIVES = 2  # negatives (and their scores) shown per sample row
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Task types whose rows carry a label that the card counts rows per.
LABELLED_TASK_TYPES = ("classification", "clustering")


@dataclass
class ValueCounts:
    """Exact counts of values rounded to `quantum`: histogram and quantiles in bounded memory.

    Mean, minimum and maximum are exact (kept from the unrounded values); quantiles are
    within quantum / 2 of the true ones.
    """

    quantum: float
    counts: Counter[int] = field(default_factory=Counter)
    num: int = 0
    num_nan: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        self.num_nan += int((~finite).sum())
        values = values[finite]
        if values.size == 0:
            return
        self.num += int(values.size)
        self.total += float(values.sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        keys, counts = np.unique(
            np.rint(values / self.quantum).astype(np.int64), return_counts=True
        )
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            self.counts[key] += count

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) sorted by value: the data a weighted histogram is drawn from."""
        keys = np.array(sorted(self.counts), dtype=np.int64)
        counts = np.array([self.counts[k] for k in keys.tolist()], dtype=np.int64)
        return keys.astype(np.float64) * self.quantum, counts

    def quantile(self, q: float) -> float:
        values, counts = self.points()
        cumulative = np.cumsum(counts)
        rank = math.floor(q * (self.num - 1) + 0.5)  # nearest rank (half up), 0-based
        index = int(np.searchsorted(cumulative, rank, side="right"))
        return float(values[min(index, len(values) - 1)])

    def summary(self) -> dict[str, Any]:
        if self.num == 0:
            return {"count": 0, "num_nan": self.num_nan}
        digits = max(0, -math.floor(math.log10(self.quantum)))
        result: dict[str, Any] = {
            "count": self.num,
            "num_nan": self.num_nan,
            "mean": round(self.total / self.num, digits + 3),
            "min": round(self.low, digits + 3),
            "max": round(self.high, digits + 3),
        }
        for q in QUANTILES:
            result[f"p{round(q * 100):02d}"] = round(self.quantile(q), digits)
        if self.quantum >= 1:  # whole units (characters): show them as integers
            for key in ("min", "max", *(f"p{round(q * 100):02d}" for q in QUANTILES)):
                result[key] = int(result[key])
        return result


def _count_column(table: pl.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    grouped = table.group_by(columns).len().sort(columns, nulls_last=True)
    return [tuple(row) for row in grouped.iter_rows()]


def _truncate(text: Any) -> Any:
    """Shorten a sample text, scrubbing secrets first so no cut-off prefix of one survives."""
    if isinstance(text, str):
        text = scrub_text(text)
    if isinstance(text, str) and len(text) > SAMPLE_TEXT_CHARS:
        return text[:SAMPLE_TEXT_CHARS] + "…"
    if isinstance(text, list):
        return [_truncate(item) for item in text]
    return text


@dataclass
class ShardStats:
    """Accumulates the card's figures over the shards of one set."""

    kind: str
    num_rows: int = 0
    num_shards: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[int] = field(default_factory=Counter)
    by_task_type: Counter[str] = field(default_factory=Counter)
    by_task_name: Counter[str] = field(default_factory=Counter)
    by_stage_task_type: Counter[tuple[int, str]] = field(default_factory=Counter)
    by_stage_source: Counter[tuple[int, str]] = field(default_factory=Counter)
    negatives_per_row: Counter[int] = field(default_factory=Counter)
    labels: Counter[tuple[str, str]] = field(default_factory=Counter)
    teachers: Counter[str] = field(default_factory=Counter)
    mining_rules: Counter[str] = field(default_factory=Counter)
    prompt_ids: Counter[tuple[str, str]] = field(default_factory=Counter)
    pos_scores: ValueCounts = field(default_factory=lambda: ValueCounts(SCORE_QUANTUM))
    neg_scores: ValueCounts = field(default_factory=lambda: ValueCounts(SCORE_QUANTUM))
    margins: ValueCounts = field(default_factory=lambda: ValueCounts(SCORE_QUANTUM))
    query_chars: ValueCounts = field(default_factory=lambda: ValueCounts(1.0))
    positive_chars: ValueCounts = field(default_factory=lambda: ValueCounts(1.0))
    negative_chars: ValueCounts = field(default_factory=lambda: ValueCounts(1.0))
    samples: list[dict[str, Any]] = field(default_factory=list)
    _query_hashes: list[np.ndarray] = field(default_factory=list)
    _positive_hashes: list[np.ndarray] = field(default_factory=list)
    _pair_hashes: list[np.ndarray] = field(default_factory=list)
    _negative_hashes: list[np.ndarray] = field(default_factory=list)
    _sampled_task_types: set[str] = field(default_factory=set)

    @property
    def has_scores(self) -> bool:
        return self.kind in ("train", "mined")

    def add(self, table: pa.Table) -> None:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        frame = self._with_raw_texts(frame)
        self.num_rows += frame.height
        self.num_shards += 1
        self._add_counts(frame)
        self._add_lengths(frame)
        if self.has_scores:
            self._add_scores(frame)
        self._add_collision_hashes(frame.filter(pl.col("stage") == 1))
        self._add_samples(frame)

    def _with_raw_texts(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add `raw_query`, `raw_positive`, `raw_negatives` (texts without instruction prefix)."""
        negatives = "negatives" if "negatives" in frame.columns else "given_negatives"
        if "query_instruction_chars" not in frame.columns:
            return frame.with_columns(
                raw_query=pl.col("query"),
                raw_positive=pl.col("positive"),
                raw_negatives=pl.col(negatives).fill_null([]),
            )
        # Symmetric tasks prefix every document with the same instruction, negatives included.
        row = pl.int_range(pl.len()).alias("_row")
        exploded = (
            frame.select(row, pl.col("doc_instruction_chars"), pl.col(negatives))
            .explode(negatives)
            .drop_nulls(negatives)
            .with_columns(pl.col(negatives).str.slice(pl.col("doc_instruction_chars")))
            .group_by("_row", maintain_order=True)
            .agg(pl.col(negatives).alias("raw_negatives"))
        )
        return (
            frame.with_columns(
                row,
                raw_query=pl.col("query").str.slice(pl.col("query_instruction_chars")),
                raw_positive=pl.col("positive").str.slice(pl.col("doc_instruction_chars")),
            )
            .join(exploded, on="_row", how="left", maintain_order="left")
            .with_columns(pl.col("raw_negatives").fill_null([]))
            .drop("_row")
        )

    def _add_counts(self, frame: pl.DataFrame) -> None:
        for source, n in _count_column(frame, ["source"]):
            self.by_source[source] += n
        for stage, n in _count_column(frame, ["stage"]):
            self.by_stage[int(stage)] += n
        for task_type, n in _count_column(frame, ["task_type"]):
            self.by_task_type[task_type] += n
        for task_name, n in _count_column(frame, ["task_name"]):
            self.by_task_name[task_name] += n
        for stage, task_type, n in _count_column(frame, ["stage", "task_type"]):
            self.by_stage_task_type[(int(stage), task_type)] += n
        for stage, source, n in _count_column(frame, ["stage", "source"]):
            self.by_stage_source[(int(stage), source)] += n
        lengths = frame.select(pl.col("raw_negatives").list.len().fill_null(0).alias("k"))
        for k, n in _count_column(lengths, ["k"]):
            self.negatives_per_row[int(k)] += n
        labelled = frame.filter(
            pl.col("task_type").is_in(LABELLED_TASK_TYPES) & pl.col("label").is_not_null()
        )
        for task_name, label, n in _count_column(labelled, ["task_name", "label"]):
            self.labels[(task_name, label)] += n
        for column, counter in (("teacher", self.teachers), ("mining_rule", self.mining_rules)):
            if column in frame.columns:
                for value, n in _count_column(frame.drop_nulls(column), [column]):
                    counter[value] += n
        if "prompt_id" in frame.columns:
            generated = frame.drop_nulls("prompt_id")
            for generator, prompt_id, n in _count_column(generated, ["generator", "prompt_id"]):
                self.prompt_ids[(generator or "unknown", prompt_id)] += n

    def _add_lengths(self, frame: pl.DataFrame) -> None:
        self.query_chars.add(frame["raw_query"].str.len_chars().to_numpy())
        self.positive_chars.add(frame["raw_positive"].str.len_chars().to_numpy())
        negatives = frame["raw_negatives"].explode().drop_nulls()
        self.negative_chars.add(negatives.str.len_chars().to_numpy())

    def _add_scores(self, frame: pl.DataFrame) -> None:
        self.pos_scores.add(frame["pos_score"].drop_nulls().to_numpy())
        self.neg_scores.add(frame["neg_scores"].explode().drop_nulls().to_numpy())
        # Margin per row: the positive's score minus its hardest negative's (the closest call).
        margins = frame.select(
            (pl.col("pos_score") - pl.col("neg_scores").list.max()).alias("margin")
        )["margin"]
        self.margins.add(margins.drop_nulls().to_numpy())

    def _add_collision_hashes(self, stage1: pl.DataFrame) -> None:
        if stage1.height == 0:
            return
        hashes = stage1.select(
            pl.col("raw_query").hash(seed=0).alias("query"),
            pl.col("raw_positive").hash(seed=0).alias("positive"),
            pl.struct("raw_query", "raw_positive").hash(seed=0).alias("pair"),
        )
        self._query_hashes.append(hashes["query"].to_numpy())
        self._positive_hashes.append(hashes["positive"].to_numpy())
        self._pair_hashes.append(hashes["pair"].to_numpy())
        negatives = stage1["raw_negatives"].explode().drop_nulls()
        self._negative_hashes.append(np.unique(negatives.hash(seed=0).to_numpy()))

    def _add_samples(self, frame: pl.DataFrame) -> None:
        """Keep the first row of each task type, up to NUM_SAMPLES rows in all."""
        wanted = [
            "source", "stage", "task_type", "task_name", "query", "positive", "negatives",
            "given_negatives", "pos_score", "neg_scores", "label", "score",
        ]  # fmt: skip
        columns = [c for c in wanted if c in frame.columns]
        for task_type in frame["task_type"].unique(maintain_order=True).to_list():
            if len(self.samples) >= NUM_SAMPLES or task_type in self._sampled_task_types:
                continue
            self._sampled_task_types.add(task_type)
            row = frame.filter(pl.col("task_type") == task_type).select(columns).row(0, named=True)
            for column in ("negatives", "given_negatives", "neg_scores"):
                if isinstance(row.get(column), list):
                    row[column] = row[column][:SAMPLE_NEGATIVES]
            self.samples.append({key: _truncate(value) for key, value in row.items()})

    def collisions(self) -> dict[str, int]:
        """In-batch collisions among stage-1 rows (they would act as false in-batch negatives).

        - `rows_sharing_positive`: rows whose positive text is also another row's positive;
        - `rows_duplicating_query`: rows whose query text is also another row's query;
        - `rows_duplicating_pair`: rows whose (query, positive) repeats another row's;
        - `rows_positive_is_a_negative`: rows whose positive is a negative on some row.
        Texts are compared as stored, without the instruction prefix.
        """
        if not self._query_hashes:
            return {
                "stage1_rows": 0,
                "rows_sharing_positive": 0,
                "distinct_shared_positives": 0,
                "rows_duplicating_query": 0,
                "distinct_duplicated_queries": 0,
                "rows_duplicating_pair": 0,
                "rows_positive_is_a_negative": 0,
            }
        queries = np.concatenate(self._query_hashes)
        positives = np.concatenate(self._positive_hashes)
        pairs = np.concatenate(self._pair_hashes)
        negatives = np.unique(np.concatenate(self._negative_hashes))
        shared_rows, shared_texts = _repeats(positives)
        query_rows, query_texts = _repeats(queries)
        pair_rows, _ = _repeats(pairs)
        return {
            "stage1_rows": int(queries.size),
            "rows_sharing_positive": shared_rows,
            "distinct_shared_positives": shared_texts,
            "rows_duplicating_query": query_rows,
            "distinct_duplicated_queries": query_texts,
            "rows_duplicating_pair": pair_rows,
            "rows_positive_is_a_negative": int(np.isin(positives, negatives).sum()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_rows": self.num_rows,
            "num_shards": self.num_shards,
            "rows": {
                "by_source": _sorted(self.by_source),
                "by_stage": {str(k): v for k, v in sorted(self.by_stage.items())},
                "by_task_type": _sorted(self.by_task_type),
                "by_task_name": _sorted(self.by_task_name),
                "by_stage_task_type": _nested(self.by_stage_task_type),
                "by_stage_source": _nested(self.by_stage_source),
            },
            "negatives_per_row": {str(k): v for k, v in sorted(self.negatives_per_row.items())},
            "labels": _nested(self.labels),
            "teachers": _sorted(self.teachers),
            "mining_rules": _sorted(self.mining_rules),
            "prompt_ids": [
                {"generator": generator, "prompt_id": prompt_id, "rows": n}
                for (generator, prompt_id), n in sorted(self.prompt_ids.items())
            ],
            "scores": {
                "positive": self.pos_scores.summary(),
                "negative": self.neg_scores.summary(),
                "margin": self.margins.summary(),
            }
            if self.has_scores
            else None,
            "lengths": {
                "query": self.query_chars.summary(),
                "positive": self.positive_chars.summary(),
                "negatives": self.negative_chars.summary(),
            },
            "collisions": self.collisions(),
            "samples": self.samples,
        }


def _repeats(hashes: np.ndarray) -> tuple[int, int]:
    """(rows whose value occurs more than once, distinct values that occur more than once)."""
    _, counts = np.unique(hashes, return_counts=True)
    repeated = counts[counts > 1]
    return int(repeated.sum()), int(repeated.size)


def _sorted(counter: Counter[Any]) -> dict[str, int]:
    return {str(key): counter[key] for key in sorted(counter, key=str)}


def _nested(counter: Counter[tuple[Any, Any]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), n in sorted(counter.items(), key=lambda item: tuple(map(str, item[0]))):
        nested.setdefault(str(outer), {})[str(inner)] = n
    return nested


def compute_stats(shard_dir: str | Path) -> ShardStats:
    """Stream a validated shard set once and return its figures."""
    from tqdm import tqdm

    manifest = read_manifest(shard_dir)
    stats = ShardStats(kind=manifest.kind)
    shards = iter_shards(shard_dir)
    for table in tqdm(shards, total=len(manifest.shards), desc="card", unit="shard", disable=None):
        stats.add(table)
    logger.info("card figures from %d rows in %d shards", stats.num_rows, stats.num_shards)
    return stats
