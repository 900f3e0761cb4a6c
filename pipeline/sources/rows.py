"""Rows of the pairs table from a source's records, one builder per task type.

- Retrieval (flat files): one row per (query, positive); `positive_ids` lists every positive
  of the query, gathered over all its records, so mining can exclude them all.
- Classification and clustering, example-based as in NV-Embed-v2 (arXiv 2405.17428, 5.2.4):
  the query is an example, the positive another example of the same label, and
  `given_negatives` a seeded sample of examples of other labels (spread over those labels) for
  the miner to rank. The label stays on the row so training keeps same-label rows apart.
- STS (section 4.2): a pair scoring at least the threshold gives two rows, (a, b) and (b, a);
  the score is kept, divided by the scale's maximum. Every sentence, including those of
  low-scoring pairs, goes into the source's corpus: NV-Embed mines STS negatives from the pool
  of other texts.

A builder reads records (line or row number, {column: value}) and drops or raises on bad ones
through the source's `BadRowPolicy`; each drop names its reason in the stage report.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from embedcurate.pipeline.errors import BadRowPolicy
from embedcurate.pipeline.schemas import TaskType
from embedcurate.pipeline.textnorm import text_hash

Record = tuple[int, dict[str, Any]]

# Our fields a source's `columns` may map, per task type; the first ones are required.
REQUIRED_FIELDS: dict[TaskType, tuple[str, ...]] = {
    TaskType.RETRIEVAL: ("query", "positive"),
    TaskType.CLASSIFICATION: ("query", "label"),
    TaskType.CLUSTERING: ("query", "label"),
    TaskType.STS: ("query", "positive", "score"),
}
OPTIONAL_FIELDS: dict[TaskType, tuple[str, ...]] = {
    TaskType.RETRIEVAL: ("query_id", "positive_id", "negatives"),
    TaskType.CLASSIFICATION: ("query_id",),
    TaskType.CLUSTERING: ("query_id",),
    TaskType.STS: (),
}
# Given negatives per classification row, as a multiple of mining.num_negatives.
NEGATIVE_POOL_FACTOR = 4


@dataclass(frozen=True)
class SourceTask:
    """A source with its task resolved against the instruction table."""

    source: str
    task_name: str
    task_type: TaskType
    definition: str
    symmetric: bool
    stage: int


@dataclass
class SourceCounter:
    """Counts for one source: records read, and notes that are not drops (kept in details)."""

    num_read: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    def read(self) -> None:
        self.num_read += 1

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n


@dataclass
class BuiltRows:
    rows: list[dict[str, Any]]
    documents: dict[str, str] | None = None  # doc_id -> text, for sources that bring a corpus


def example_id(source: str, *parts: str) -> str:
    """Deterministic row id: the source and a hash of what identifies the row within it."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).hexdigest()
    return f"{source}-{digest}"


def content_id(text: str) -> str:
    """Id of a text that came without one: its normalised-text hash (the pipeline's 'same')."""
    return text_hash(text)


def seeded_rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.blake2b("\x1f".join([str(seed), *parts]).encode(), digest_size=8)
    return random.Random(int.from_bytes(digest.digest(), "big"))


class FieldReader:
    """Reads our fields from records through the source's column mapping.

    Bad input (a missing column, an empty text, a score that is not a number) goes to the
    policy: an error naming the file and line, or a counted drop. Rows a rule leaves out (a
    filter, a score below the STS threshold, a duplicate) go to `skip`, always counted.
    """

    def __init__(
        self,
        where: str,
        columns: dict[str, str],
        policy: BadRowPolicy,
        skip: Callable[[str], None],
        keep_where: dict[str, str] | None = None,
    ) -> None:
        self.where = where
        self.columns = columns
        self.policy = policy
        self.skip = skip
        self.keep_where = keep_where or {}

    def column(self, name: str) -> str:
        return self.columns.get(name, name)

    def wanted(self, record: dict[str, Any]) -> bool:
        """False (and counted) for a record that `keep_where` filters out."""
        if all(str(record.get(col, "")) == value for col, value in self.keep_where.items()):
            return True
        self.skip("filtered")
        return False

    def raw(self, line: int, record: dict[str, Any], name: str) -> Any:
        """The value of field `name`, or None after reporting a missing column."""
        column = self.column(name)
        value = record.get(column)
        if value is None:
            present = ", ".join(repr(key) for key in list(record)[:12])
            self.policy.bad(
                self.where,
                "missing_column",
                line,
                f"no value in column {column!r} (this record has {present or 'no columns'})",
            )
        return value

    def text(self, line: int, record: dict[str, Any], name: str) -> str | None:
        value = self.raw(line, record, name)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.policy.bad(self.where, "not_text", line, f"column {self.column(name)!r}")
            return None
        text = str(value)
        if not text.strip():
            self.policy.bad(self.where, "empty_text", line, f"column {self.column(name)!r}")
            return None
        return text

    def texts(
        self, line: int, record: dict[str, Any], name: str, *, allow_empty: bool = False
    ) -> list[str] | None:
        """A text or a list of texts (e.g. several positives on one record)."""
        value = self.raw(line, record, name)
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if not values and allow_empty:
            return []
        if not values or not all(isinstance(v, str) for v in values):
            self.policy.bad(self.where, "not_text", line, f"column {self.column(name)!r}")
            return None
        if not all(v.strip() for v in values):
            self.policy.bad(self.where, "empty_text", line, f"column {self.column(name)!r}")
            return None
        return list(values)

    def score(self, line: int, record: dict[str, Any], score_max: float) -> float | None:
        value = self.raw(line, record, "score")
        if value is None:
            return None
        try:
            score = float(value)
        except (TypeError, ValueError):
            self.policy.bad(self.where, "invalid_score", line, f"{value!r} is not a number")
            return None
        if math.isnan(score) or not 0 <= score <= score_max:
            self.policy.bad(
                self.where, "score_out_of_range", line, f"{score} is outside 0..{score_max}"
            )
            return None
        return score


def _base_row(task: SourceTask, provenance: str) -> dict[str, Any]:
    return {
        "source": task.source,
        "task_type": task.task_type.value,
        "task_name": task.task_name,
        "stage": task.stage,
        "instruction": task.definition,
        "symmetric": task.symmetric,
        "provenance": provenance,
    }


@dataclass
class _QueryGroup:
    query: str
    query_id: str
    positives: list[tuple[str, str, str]] = field(default_factory=list)  # (id, text, provenance)
    positive_ids: set[str] = field(default_factory=set)
    positive_hashes: set[str] = field(default_factory=set)
    negatives: list[str] = field(default_factory=list)


def retrieval_rows(
    records: Iterable[Record], task: SourceTask, reader: FieldReader, counter: SourceCounter
) -> BuiltRows:
    """One row per (query, positive) of a flat retrieval file; the positives form the corpus."""
    groups: dict[str, _QueryGroup] = {}
    documents: dict[str, str] = {}
    has_query_id = "query_id" in reader.columns
    has_positive_id = "positive_id" in reader.columns
    has_negatives = "negatives" in reader.columns
    for line, record in records:
        counter.read()
        if not reader.wanted(record):
            continue
        query = reader.text(line, record, "query")
        positives = reader.texts(line, record, "positive")
        if query is None or positives is None:
            continue
        positive_hashes = [content_id(text) for text in positives]
        positive_ids = positive_hashes
        if has_positive_id:
            given_ids = reader.raw(line, record, "positive_id")
            if given_ids is None:
                continue
            given_ids = given_ids if isinstance(given_ids, list) else [given_ids]
            if len(given_ids) != len(positives):
                reader.policy.bad(reader.where, "malformed_row", line, "positive ids != positives")
                continue
            positive_ids = [str(pid) for pid in given_ids]
        negatives: list[str] = []
        if has_negatives:
            negatives_value = reader.texts(line, record, "negatives", allow_empty=True)
            if negatives_value is None:
                continue
            negatives = negatives_value
        query_hash = content_id(query)
        query_id = query_hash
        if has_query_id:
            given_query_id = reader.text(line, record, "query_id")
            if given_query_id is None:
                continue
            query_id = given_query_id
        group = groups.setdefault(query_id, _QueryGroup(query=query, query_id=query_id))
        provenance = f"{reader.where}:{line}"
        left_out: list[str] = []
        for positive_id, positive, positive_hash in zip(
            positive_ids, positives, positive_hashes, strict=True
        ):
            if positive_id in group.positive_ids:
                left_out.append("duplicate_pair")
                continue
            if positive_hash == query_hash:
                left_out.append("query_equals_positive")
                continue
            group.positives.append((positive_id, positive, provenance))
            group.positive_ids.add(positive_id)
            group.positive_hashes.add(positive_hash)
            documents.setdefault(positive_id, positive)
        _count_left_out(reader, counter, left_out, num_positives=len(positives))
        group.negatives.extend(negatives)
    rows: list[dict[str, Any]] = []
    for group in groups.values():
        all_positive_ids = [pid for pid, _, _ in group.positives]
        negatives = _distinct(group.negatives)  # (hash, text)
        kept_negatives = [text for key, text in negatives if key not in group.positive_hashes]
        counter.note("given_negative_equals_positive", len(negatives) - len(kept_negatives))
        for key, text in negatives:
            if key not in group.positive_hashes:
                documents.setdefault(key, text)
        for positive_id, positive, provenance in group.positives:
            rows.append(
                {
                    **_base_row(task, provenance),
                    "example_id": example_id(task.source, group.query_id, positive_id),
                    "query_id": group.query_id,
                    "query": group.query,
                    "positive_id": positive_id,
                    "positive": positive,
                    "positive_ids": all_positive_ids,
                    "given_negatives": kept_negatives or None,
                }
            )
    return BuiltRows(rows=rows, documents=documents)


def _count_left_out(
    reader: FieldReader, counter: SourceCounter, left_out: list[str], *, num_positives: int
) -> None:
    """A record is one outcome: dropped (for its first reason) when none of its positives
    gave a row; else kept, with each positive left out noted (not a dropped record)."""
    if not left_out:
        return
    if len(left_out) == num_positives:
        reader.skip(left_out[0])
        return
    for reason in left_out:
        counter.note(f"positive_{reason}")


def _distinct(texts: list[str]) -> list[tuple[str, str]]:
    """(content id, text) of each distinct text, first occurrences in order."""
    seen: set[str] = set()
    kept = []
    for text in texts:
        key = content_id(text)
        if key not in seen:
            seen.add(key)
            kept.append((key, text))
    return kept


@dataclass(frozen=True)
class _Example:
    example_id: str
    text: str
    label: str
    provenance: str


def _read_examples(
    records: Iterable[Record], reader: FieldReader, counter: SourceCounter
) -> list[_Example]:
    examples: list[_Example] = []
    seen_texts: dict[str, int] = {}
    seen_ids: set[str] = set()
    has_id = "query_id" in reader.columns
    for line, record in records:
        counter.read()
        if not reader.wanted(record):
            continue
        text = reader.text(line, record, "query")
        label = reader.text(line, record, "label")
        if text is None or label is None:
            continue
        identity = reader.text(line, record, "query_id") if has_id else content_id(text)
        if identity is None:
            continue
        if has_id and identity in seen_ids:
            reader.policy.bad(reader.where, "duplicate_id", line, f"id {identity!r} seen before")
            continue
        key = content_id(text)
        if key in seen_texts:
            reader.skip("duplicate_text")
            continue
        seen_texts[key] = line
        seen_ids.add(identity)
        examples.append(_Example(identity, text, label.strip(), f"{reader.where}:{line}"))
    return examples


def _pick_other(rng: random.Random, pool: list[_Example], taken: set[str]) -> _Example:
    """A random member of `pool` whose id is not in `taken` (the caller ensures one exists).

    Rejection sampling: pools are large next to the few examples a row takes, so this costs
    a draw or two, where copying or filtering the pool per row would be quadratic.
    """
    while True:
        candidate = pool[rng.randrange(len(pool))]
        if candidate.example_id not in taken:
            return candidate


def _sample_other_labels(
    rng: random.Random, by_label: dict[str, list[_Example]], own_label: str, count: int
) -> list[_Example]:
    """`count` distinct examples of other labels, cycling over the labels in a seeded order."""
    labels = sorted(label for label in by_label if label != own_label)
    rng.shuffle(labels)
    taken: set[str] = set()
    taken_per_label = dict.fromkeys(labels, 0)
    chosen: list[_Example] = []
    while len(chosen) < count and labels:
        for label in list(labels):
            pool = by_label[label]
            if taken_per_label[label] >= len(pool):
                labels.remove(label)
                continue
            example = _pick_other(rng, pool, taken)
            taken.add(example.example_id)
            taken_per_label[label] += 1
            chosen.append(example)
            if len(chosen) == count:
                break
    return chosen


def example_rows(
    records: Iterable[Record],
    task: SourceTask,
    reader: FieldReader,
    counter: SourceCounter,
    *,
    seed: int,
    num_negatives: int,
) -> BuiltRows:
    """Example-based classification/clustering rows (positive: another same-label example)."""
    examples = _read_examples(records, reader, counter)
    by_label: dict[str, list[_Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    num_given = NEGATIVE_POOL_FACTOR * num_negatives
    rows: list[dict[str, Any]] = []
    for example in examples:
        same_label = by_label[example.label]
        if len(same_label) < 2:
            reader.skip("singleton_label")
            continue
        if len(by_label) < 2:
            reader.skip("no_other_label")
            continue
        rng = seeded_rng(seed, task.source, example.example_id)
        positive = _pick_other(rng, same_label, {example.example_id})
        negatives = _sample_other_labels(rng, by_label, example.label, num_given)
        rows.append(
            {
                **_base_row(task, example.provenance),
                "example_id": example_id(task.source, example.example_id),
                "query_id": example.example_id,
                "query": example.text,
                "positive_id": positive.example_id,
                "positive": positive.text,
                "positive_ids": [positive.example_id],
                "given_negatives": [n.text for n in negatives],
                "label": example.label,
            }
        )
    return BuiltRows(rows=rows, documents=None)


def sts_rows(
    records: Iterable[Record],
    task: SourceTask,
    reader: FieldReader,
    counter: SourceCounter,
    *,
    threshold: float,
    score_max: float,
) -> BuiltRows:
    """Both directions of every pair scoring >= threshold; all sentences form the corpus."""
    documents: dict[str, str] = {}
    directed: list[tuple[str, str, str, str, float, str]] = []  # qid, q, pid, p, score, prov
    partners: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for line, record in records:
        counter.read()
        if not reader.wanted(record):
            continue
        first = reader.text(line, record, "query")
        second = reader.text(line, record, "positive")
        score = reader.score(line, record, score_max)
        if first is None or second is None or score is None:
            continue
        first_id, second_id = content_id(first), content_id(second)
        documents.setdefault(first_id, first)
        documents.setdefault(second_id, second)
        if score < threshold:
            reader.skip("below_sts_threshold")
            continue
        if first_id == second_id:
            reader.skip("query_equals_positive")
            continue
        if (first_id, second_id) in seen:
            reader.skip("duplicate_pair")
            continue
        provenance = f"{reader.where}:{line}"
        for qid, query, pid, positive in (
            (first_id, first, second_id, second),
            (second_id, second, first_id, first),
        ):
            seen.add((qid, pid))
            partners.setdefault(qid, []).append(pid)
            directed.append((qid, query, pid, positive, score / score_max, provenance))
    rows = [
        {
            **_base_row(task, provenance),
            "example_id": example_id(task.source, qid, pid),
            "query_id": qid,
            "query": query,
            "positive_id": pid,
            "positive": positive,
            "positive_ids": partners[qid],
            "score": score,
        }
        for qid, query, pid, positive, score, provenance in directed
    ]
    return BuiltRows(rows=rows, documents=documents)
