"""What an export is asked for (`ExportConfig`) and what a format module provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from embedcurate.pipeline.shards import DEFAULT_ROWS_PER_SHARD, ShardFormat

FormatName = Literal["sentence-transformers", "flagembedding", "tevatron"]
OnShort = Literal["drop", "keep"]
StageChoice = Literal["1", "2", "all"]


class ExportConfig(BaseModel):
    """The options of `embedcurate export`; None means "as the source set has it"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: FormatName
    num_negatives: int | None = Field(default=None, ge=0)
    on_short: OnShort = "drop"
    strip_instruction: bool = False
    stage: StageChoice = "all"
    rows_per_shard: int = Field(default=DEFAULT_ROWS_PER_SHARD, ge=1)

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_as_text(cls, value: Any) -> Any:
        """`stage=2` from Python means the same as `--stage 2` on the command line."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def wants_stage(self, stage: int) -> bool:
        return self.stage == "all" or int(self.stage) == stage


@dataclass(frozen=True)
class ExportRow:
    """One train row as the exports see it: texts with or without the instruction, and ids.

    Ids come from the mined set (`query_id`, `positive_id`, `negative_ids`); they are None when
    the export does not need them.
    """

    example_id: str
    source: str
    instruction: str
    query: str
    positive: str
    negatives: list[str]
    instruction_stripped: bool = False
    query_id: str | None = None
    positive_id: str | None = None
    negative_ids: list[str] | None = None

    @classmethod
    def from_train_row(
        cls, row: dict[str, Any], *, strip_instruction: bool, ids: tuple[Any, ...] | None = None
    ) -> ExportRow:
        """Take the instruction prefix off the texts when asked (its length is on the row)."""
        query, positive, negatives = row["query"], row["positive"], list(row["negatives"])
        if strip_instruction:
            query = query[row["query_instruction_chars"] :]
            doc_chars = row["doc_instruction_chars"]
            positive = positive[doc_chars:]
            negatives = [negative[doc_chars:] for negative in negatives]
        query_id, positive_id, negative_ids = ids if ids is not None else (None, None, None)
        return cls(
            example_id=row["example_id"],
            source=row["source"],
            instruction=row["instruction"],
            query=query,
            positive=positive,
            negatives=negatives,
            instruction_stripped=strip_instruction,
            query_id=query_id,
            positive_id=positive_id,
            negative_ids=None if negative_ids is None else list(negative_ids)[: len(negatives)],
        )

    @property
    def prompt(self) -> str:
        """The instruction a trainer should put before the query: empty when it is in the text."""
        return self.instruction if self.instruction_stripped else ""

    def padded(self, num_negatives: int) -> ExportRow:
        """The row with its negatives repeated in order until there are `num_negatives`.

        FlagEmbedding and Tevatron fill a short group the same way at read time (sampling the
        row's own negatives again); fixed-width layouts need it done here.
        """
        if not self.negatives or len(self.negatives) >= num_negatives:
            return self
        repeats = -(-num_negatives // len(self.negatives))
        negatives = (self.negatives * repeats)[:num_negatives]
        negative_ids = self.negative_ids
        if negative_ids is not None:
            negative_ids = (negative_ids * repeats)[:num_negatives]
        return ExportRow(**{**self.__dict__, "negatives": negatives, "negative_ids": negative_ids})


@dataclass(frozen=True)
class TrainerFormat:
    """How one trainer reads hard-negative training data.

    `schema(k)` is the Arrow schema of the written records, `record(row, k)` one record;
    `fixed_width` formats get short rows padded (`--on-short keep`); `needs_ids` formats read
    the mined set beside the train set for document ids. `data_subdir` keeps the data files
    apart from manifest.json when the trainer reads every `.json*` file of a folder.
    """

    name: str
    file_format: ShardFormat
    schema: Callable[[int], pa.Schema]
    record: Callable[[ExportRow, int], dict[str, Any]]
    usage: Callable[[str, bool], str]  # (export folder, instruction stripped) -> Markdown
    fixed_width: bool = False
    needs_ids: bool = False
    data_subdir: str = "data"
