"""Training data from TRAIN shards: streaming, stage batches, tokens with instruction masks.

- `TrainShards` refuses a shard set whose manifest does not validate, then streams it one
  shard at a time (rows through a bounded shuffle buffer seeded per epoch),
  so memory stays bounded by a shard plus the buffer whatever the set's size.
- `stage_batches` turns that stream into micro-batches: plain batches for stage 1; for stage 2
  each batch holds one task type and rows of the same label go to different batches where the
  data allows. The stream is a pure function of (seed, epoch), which makes resuming exact: skip
  the batches already consumed.
- `tokenize` maps the instruction prefix (`*_instruction_chars` characters) to a token mask
  through the tokenizer's character offsets, so pooling can leave the instruction out while
  attention still reads it.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from embedcurate.model.config import StageConfig
from embedcurate.pipeline.schemas import TableKind, schema_for
from embedcurate.pipeline.shards import iter_shards, require_valid

logger = logging.getLogger(__name__)

# A stage-2 row waits this many batches' worth of rows for a batch without its label before
# it is placed next to a same-label row anyway (binary tasks cannot fill a batch otherwise).
_LABEL_PATIENCE_BATCHES = 4


@dataclass(frozen=True)
class TrainRow:
    example_id: str
    task_type: str
    task_name: str
    stage: int
    query: str
    query_instruction_chars: int
    positive: str
    negatives: tuple[str, ...]
    doc_instruction_chars: int
    label: str | None
    extra_positives: tuple[str, ...] = ()  # judged positives: never this row's negatives

    @property
    def label_key(self) -> str | None:
        """Labels are compared within a task only."""
        return None if self.label is None else f"{self.task_name}\x1f{self.label}"


class TrainShards:
    """A validated TRAIN shard set, streamed shard by shard."""

    def __init__(self, shards_dir: str | Path) -> None:
        self.shards_dir = Path(shards_dir)
        self.manifest = require_valid(self.shards_dir, TableKind.TRAIN)  # raises ShardSetError
        self.num_rows = self.manifest.num_rows

    def iter_rows(
        self, *, stages: set[int], seed: int, epoch: int, buffer: int
    ) -> Iterator[TrainRow]:
        """Rows of `stages` in a shuffled order that depends only on (seed, epoch).

        Shards are read in manifest order, one at a time; rows pass through a shuffle buffer
        of `buffer` rows (a buffer at least a shard's size mixes across shard boundaries).
        """
        rng = random.Random(f"{seed}:{epoch}")
        pending: list[TrainRow] = []
        for table in iter_shards(self.shards_dir, TableKind.TRAIN, validate=False):
            for row in _table_rows(table, stages):
                pending.append(row)
                if len(pending) >= buffer:
                    pick = rng.randrange(len(pending))
                    pending[pick], pending[-1] = pending[-1], pending[pick]
                    yield pending.pop()
        rng.shuffle(pending)
        yield from pending


def _train_columns() -> list[str]:
    """The TRAIN columns a `TrainRow` reads, in schema order, taken from the data contract so
    a renamed or dropped column fails here, at import, not mid-training."""
    wanted = {f.name for f in fields(TrainRow)}
    columns = [f.name for f in schema_for(TableKind.TRAIN) if f.name in wanted]
    missing = wanted - set(columns)
    if missing:
        raise RuntimeError(f"TrainRow fields missing from the TRAIN schema: {sorted(missing)}")
    return columns


_COLUMNS = _train_columns()


def _table_rows(table: pa.Table, stages: set[int]) -> Iterator[TrainRow]:
    for record in table.select(_COLUMNS).to_pylist():
        if record["stage"] not in stages:
            continue
        yield TrainRow(
            example_id=record["example_id"],
            task_type=record["task_type"],
            task_name=record["task_name"],
            stage=int(record["stage"]),
            query=record["query"],
            query_instruction_chars=int(record["query_instruction_chars"]),
            positive=record["positive"],
            negatives=tuple(record["negatives"] or ()),
            doc_instruction_chars=int(record["doc_instruction_chars"]),
            label=record["label"],
            extra_positives=tuple(record["extra_positives"] or ()),
        )


def rows_for_stage(cfg: StageConfig) -> set[int]:
    return {1, 2} if cfg.rows == "all" else {cfg.stage}


def stage_batches(
    shards: TrainShards, cfg: StageConfig, *, seed: int, buffer: int
) -> Iterator[list[TrainRow]]:
    """Endless micro-batches of `cfg.batch_size` rows, epoch after epoch."""
    stages = rows_for_stage(cfg)
    epoch = 0
    batcher = _TaskBatcher(cfg.batch_size) if cfg.one_task_type_per_batch else None
    plain: list[TrainRow] = []
    while True:
        seen = 0
        for row in shards.iter_rows(stages=stages, seed=seed, epoch=epoch, buffer=buffer):
            seen += 1
            if batcher is None:
                plain.append(row)
                if len(plain) == cfg.batch_size:
                    yield plain
                    plain = []
            else:
                yield from batcher.add(row)
        if seen == 0:
            raise ValueError(
                f"{shards.shards_dir}: no rows for stage {cfg.stage} (rows of stage(s) "
                f"{sorted(stages)}); the set has {shards.num_rows} rows"
            )
        epoch += 1


class _TaskBatcher:
    """Stage-2 batching: one task type per batch; a label at most once per batch if possible.

    Each task type has an open batch. A row whose label is already in the open batch waits in
    a queue, and waiting rows are tried first whenever a new batch opens. A row that has waited
    longer than a few batches' worth of rows goes in regardless, so a task with fewer labels
    than the batch size still trains.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.open: dict[str, list[TrainRow]] = {}
        self.waiting: dict[str, deque[tuple[int, TrainRow]]] = {}
        self.clock = 0

    def add(self, row: TrainRow) -> Iterator[list[TrainRow]]:
        self.clock += 1
        self.waiting.setdefault(row.task_type, deque()).append((self.clock, row))
        yield from self._fill(row.task_type)

    def _fill(self, task_type: str) -> Iterator[list[TrainRow]]:
        waiting = self.waiting[task_type]
        batch = self.open.setdefault(task_type, [])
        patience = _LABEL_PATIENCE_BATCHES * self.batch_size
        progress = True
        while progress:
            progress = False
            labels = {r.label_key for r in batch if r.label_key is not None}
            for position, (arrived, row) in enumerate(waiting):
                overdue = self.clock - arrived >= patience
                if row.label_key is None or row.label_key not in labels or overdue:
                    del waiting[position]
                    batch.append(row)
                    progress = True
                    break
            if len(batch) == self.batch_size:
                yield batch
                batch = self.open[task_type] = []


@dataclass
class ContrastiveBatch:
    """Texts and index tensors of one micro-batch for the InfoNCE loss.

    Documents are flattened row by row: row i contributes its positive then its first k
    negatives. `doc_owner[j]` is the row document j came from; `positive_index[i]` is row i's
    positive among the documents. Text and label keys let the loss mask false negatives.
    """

    queries: list[str]
    query_instruction_chars: list[int]
    docs: list[str]
    doc_instruction_chars: list[int]
    doc_owner: torch.Tensor  # (num_docs,) long
    positive_index: torch.Tensor  # (batch,) long
    doc_text_key: torch.Tensor  # (num_docs,) long, equal iff texts are equal
    row_label_key: torch.Tensor  # (batch,) long, -1 for unlabelled rows
    extra_positive: torch.Tensor | None = None  # (batch, num_docs) bool, row's judged positives


def build_contrastive_batch(rows: Sequence[TrainRow], num_hard_negatives: int) -> ContrastiveBatch:
    docs: list[str] = []
    doc_chars: list[int] = []
    owners: list[int] = []
    positives: list[int] = []
    for index, row in enumerate(rows):
        positives.append(len(docs))
        chosen = [row.positive, *row.negatives[:num_hard_negatives]]
        docs.extend(chosen)
        doc_chars.extend([row.doc_instruction_chars] * len(chosen))
        owners.extend([index] * len(chosen))
    labels = {key: i for i, key in enumerate(sorted({r.label_key for r in rows if r.label_key}))}
    doc_keys = [_text_key(text) for text in docs]
    return ContrastiveBatch(
        queries=[row.query for row in rows],
        query_instruction_chars=[row.query_instruction_chars for row in rows],
        docs=docs,
        doc_instruction_chars=doc_chars,
        doc_owner=torch.tensor(owners, dtype=torch.long),
        positive_index=torch.tensor(positives, dtype=torch.long),
        doc_text_key=torch.tensor(doc_keys, dtype=torch.long),
        row_label_key=torch.tensor(
            [labels[r.label_key] if r.label_key else -1 for r in rows], dtype=torch.long
        ),
        extra_positive=_extra_positive_mask(rows, doc_keys),
    )


def _extra_positive_mask(rows: Sequence[TrainRow], doc_keys: list[int]) -> torch.Tensor | None:
    """(batch, num_docs) True where document j's text is one of row i's judged positives
    (relabel mode of the judge stage); None when no row has any."""
    if not any(row.extra_positives for row in rows):
        return None
    mask = torch.zeros(len(rows), len(doc_keys), dtype=torch.bool)
    for i, row in enumerate(rows):
        extra = {_text_key(text) for text in row.extra_positives}
        for j, key in enumerate(doc_keys):
            mask[i, j] = key in extra
    return mask


def _text_key(text: str) -> int:
    """A 63-bit key that is equal for equal texts (collisions are negligible)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()) >> 1


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (batch, seq)
    attention_mask: torch.Tensor  # (batch, seq) 1 for real tokens
    pool_mask: torch.Tensor  # (batch, seq) 1 for real tokens outside the instruction

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.pool_mask.to(device)
        )

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    instruction_chars: Sequence[int],
    max_length: int,
) -> TokenBatch:
    """Tokenize with right truncation at `max_length`; mark the instruction's tokens.

    A token belongs to the instruction when it is not a special token and ends at or before
    the instruction's last character; a token straddling the boundary carries query text and
    stays in the pool. Special tokens (BOS, CLS, SEP) stay in the pool, as in the backbone's
    usual mean pooling. A row whose pool would hold no text token (the instruction filled the
    whole length) falls back to pooling every real token.
    """
    encoded = tokenizer(
        list(texts),
        max_length=max_length,
        truncation=True,
        padding=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    attention = encoded["attention_mask"]  # (batch, seq)
    ends = encoded["offset_mapping"][..., 1]  # (batch, seq) end character of each token
    limit = torch.tensor(list(instruction_chars), dtype=ends.dtype).unsqueeze(1)  # (batch, 1)
    special = encoded["special_tokens_mask"].bool()
    in_instruction = (ends <= limit) & ~special & (limit > 0)
    pool = attention.bool() & ~in_instruction
    empty = (pool & ~special).sum(dim=1) == 0
    pool[empty] = attention.bool()[empty]
    return TokenBatch(
        input_ids=encoded["input_ids"], attention_mask=attention, pool_mask=pool.long()
    )
