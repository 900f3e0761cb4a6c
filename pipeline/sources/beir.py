"""Read a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) with checks.

Every problem names the file and line: invalid UTF-8 or JSON, a missing id or text, an empty
text, a duplicate id (or a query and document judged twice), a qrels line naming a document or
query that does not exist. Under `on_error: drop` each is counted with its reason instead of
raised. The same checks run on the MTEB layout of a BEIR dataset on the Hugging Face hub
(`pipeline.hub.hub_beir_parts`), whose rows are numbered instead of lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedcurate.pipeline.errors import BadRowPolicy, InputError
from embedcurate.pipeline.sources.readers import first_line_fields, iter_jsonl, iter_tsv

# The qrels columns, and the names a header may give each (compared lowercased).
QRELS_COLUMNS: dict[str, tuple[str, ...]] = {
    "query-id": ("query-id", "query_id", "qid"),
    "corpus-id": ("corpus-id", "corpus_id", "doc-id", "doc_id", "docid"),
    "score": ("score", "relevance", "label"),
}


@dataclass(frozen=True)
class BeirFolder:
    path: Path
    split: str
    corpus: pa.Table  # columns doc_id, title, text; one row per document
    queries: dict[str, str]  # query_id -> text (only queries the split's qrels name)
    qrels: dict[str, dict[str, int]]  # query_id -> {doc_id: relevance > 0}, file order

    @property
    def num_docs(self) -> int:
        return self.corpus.num_rows


@dataclass(frozen=True)
class RecordStream:
    """The records of one BEIR part, numbered by line or row, and where they come from."""

    where: str  # a file path, or a hub id and config
    records: Iterable[tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class BeirParts:
    """Corpus, queries and one split's qrels; qrels records hold query-id, corpus-id, score."""

    corpus: RecordStream
    queries: RecordStream
    qrels: RecordStream


@dataclass
class BeirScan:
    """What the pairs stage needs from a BEIR dataset, without holding the whole corpus.

    `judged_docs` keeps the texts of documents the split's qrels name (positives and judged
    non-relevant ones); every other document only passes through `on_document`.
    """

    queries: dict[str, str]  # query_id -> text, queries with at least one positive
    qrels: dict[str, dict[str, int]]  # query_id -> {doc_id: relevance > 0}, file order
    judged_negatives: dict[str, list[str]]  # query_id -> doc ids judged not relevant (score 0)
    judged_docs: dict[str, tuple[str, str]]  # doc_id -> (title, text)
    judgment_lines: dict[tuple[str, str], int]  # (query_id, doc_id) -> qrels line or row
    num_docs: int = 0
    num_judgments: int = 0
    num_queries: int = 0  # valid queries read
    num_not_relevant: int = 0  # judgments scored <= 0: given negatives, never rows
    num_title_only: int = 0  # documents kept with a title and an empty text


def local_beir_parts(
    folder: Path, split: str, policy: BadRowPolicy, text_policy: BadRowPolicy | None = None
) -> BeirParts:
    """The three parts of a BEIR folder; a missing file is an error naming it.

    Unreadable lines of the qrels go to `policy`, of the corpus and queries to `text_policy`
    (default `policy`), as in `scan_beir`.
    """
    text_policy = text_policy or policy
    files = {
        "corpus": folder / "corpus.jsonl",
        "queries": folder / "queries.jsonl",
        "qrels": folder / "qrels" / f"{split}.tsv",
    }
    for name, file in files.items():
        if not file.is_file():
            raise InputError(file, f"BEIR {name} file not found")
    return BeirParts(
        corpus=RecordStream(str(files["corpus"]), iter_jsonl(files["corpus"], text_policy)),
        queries=RecordStream(str(files["queries"]), iter_jsonl(files["queries"], text_policy)),
        qrels=RecordStream(str(files["qrels"]), _qrels_records(files["qrels"], policy)),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def qrels_layout(path: Path) -> tuple[bool, dict[str, int]]:
    """(has a header, position of each qrels column), from the file's first line.

    A first line whose score field is a number is a judgment, not a header: the columns are
    then query-id, corpus-id, score in that order, and the line is read as data (skipping it
    blindly would lose one judgment uncounted). Otherwise the line must be a header naming
    every column, in any order; columns are then read by name.
    """
    fields = first_line_fields(path)
    if len(fields) >= 3 and _is_number(fields[2]):
        return False, {name: i for i, name in enumerate(QRELS_COLUMNS)}
    lowered = [field.lower() for field in fields]
    positions: dict[str, int] = {}
    for column, names in QRELS_COLUMNS.items():
        found = [i for i, field in enumerate(lowered) if field in names]
        if found:
            positions[column] = found[0]
    missing = [column for column in QRELS_COLUMNS if column not in positions]
    if missing:
        raise InputError(
            path,
            f"the first line is neither a judgment (query id, document id, numeric score) nor "
            f"a header naming {', '.join(QRELS_COLUMNS)} (it has {', '.join(fields) or 'nothing'}"
            f"; missing {', '.join(missing)})",
            1,
        )
    return True, positions


def _qrels_records(path: Path, policy: BadRowPolicy) -> Iterator[tuple[int, dict[str, Any]]]:
    has_header, positions = qrels_layout(path)
    needed = max(positions.values()) + 1
    for line_no, fields in iter_tsv(path, policy, header=has_header):
        if len(fields) < needed:
            policy.bad(path, "malformed_qrels", line_no, f"needs {', '.join(QRELS_COLUMNS)}")
            continue
        yield line_no, {column: fields[i].strip() for column, i in positions.items()}


def _iter_texts(
    stream: RecordStream, policy: BadRowPolicy, *, with_title: bool
) -> Iterator[tuple[int, str, str, str]]:
    """(line, id, title, text) per valid record of a BEIR corpus or queries part."""
    seen: set[str] = set()
    for line_no, record in stream.records:
        record_id = record.get("_id")
        text = record.get("text")
        if record_id is None or not isinstance(text, str):
            policy.bad(stream.where, "missing_field", line_no, "needs '_id' and a string 'text'")
            continue
        record_id = str(record_id)
        title = str(record.get("title") or "") if with_title else ""
        if not text.strip() and not title.strip():
            policy.bad(stream.where, "empty_text", line_no, f"id {record_id!r}")
            continue
        if record_id in seen:
            policy.bad(stream.where, "duplicate_id", line_no, f"id {record_id!r} seen before")
            continue
        seen.add(record_id)
        yield line_no, record_id, title, text


def _read_judgments(
    stream: RecordStream, policy: BadRowPolicy, query_ids: set[str], scan: BeirScan
) -> list[tuple[int, str, str, int]]:
    """Qrels records whose query exists, as (line, query_id, doc_id, score); counts them all."""
    judgments: list[tuple[int, str, str, int]] = []
    for line_no, record in stream.records:
        scan.num_judgments += 1
        query_id, doc_id = str(record.get("query-id", "")), str(record.get("corpus-id", ""))
        score_value = record.get("score")
        try:
            score = int(float(score_value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            policy.bad(stream.where, "malformed_qrels", line_no, f"score {score_value!r}")
            continue
        if query_id not in query_ids:
            policy.bad(
                stream.where, "unknown_query", line_no, f"query {query_id!r} not in the queries"
            )
            continue
        if (query_id, doc_id) in scan.judgment_lines:
            first = scan.judgment_lines[(query_id, doc_id)]
            policy.bad(
                stream.where,
                "duplicate_id",
                line_no,
                f"query {query_id!r} and document {doc_id!r} already judged on line {first}",
            )
            continue
        scan.judgment_lines[(query_id, doc_id)] = line_no
        judgments.append((line_no, query_id, doc_id, score))
    return judgments


def scan_beir(
    parts: BeirParts,
    policy: BadRowPolicy,
    on_document: Callable[[str, str, str], None] | None = None,
    *,
    text_policy: BadRowPolicy | None = None,
) -> BeirScan:
    """Check and index a BEIR dataset, streaming the corpus once through `on_document`.

    Order: queries, then qrels (a judgment naming an unknown query is reported at once), then
    the corpus (each valid document goes to `on_document(doc_id, title, text)`), then the
    judgments naming documents the corpus lacks. Bad judgments go to `policy`; bad queries
    and documents to `text_policy` (default `policy`), so a caller counting judgments can
    count the texts apart.
    """
    text_policy = text_policy or policy
    scan = BeirScan(queries={}, qrels={}, judged_negatives={}, judged_docs={}, judgment_lines={})
    queries = {
        qid: text for _, qid, _, text in _iter_texts(parts.queries, text_policy, with_title=False)
    }
    scan.num_queries = len(queries)
    judgments = _read_judgments(parts.qrels, policy, set(queries), scan)
    wanted = {doc_id for _, _, doc_id, _ in judgments}
    doc_ids: set[str] = set()
    for _, doc_id, title, text in _iter_texts(parts.corpus, text_policy, with_title=True):
        doc_ids.add(doc_id)
        if not text.strip():
            scan.num_title_only += 1
        if doc_id in wanted:
            scan.judged_docs[doc_id] = (title, text)
        if on_document is not None:
            on_document(doc_id, title, text)
    scan.num_docs = len(doc_ids)
    for line_no, query_id, doc_id, score in judgments:
        if doc_id not in doc_ids:
            policy.bad(
                parts.qrels.where,
                "unknown_document",
                line_no,
                f"document {doc_id!r} not in the corpus",
            )
            continue
        if score > 0:
            scan.qrels.setdefault(query_id, {})[doc_id] = score
        else:
            scan.num_not_relevant += 1
            scan.judged_negatives.setdefault(query_id, []).append(doc_id)
    scan.queries = {qid: queries[qid] for qid in scan.qrels}
    return scan


def load_beir(
    path: str | Path,
    split: str = "train",
    *,
    on_error: str = "raise",
    drop: Callable[[str], None] | None = None,
) -> BeirFolder:
    """Load a BEIR folder; `drop(reason)` counts each dropped row when on_error is 'drop'."""
    folder = Path(path)
    policy = BadRowPolicy(on_error, drop)
    columns: dict[str, list[str]] = {"doc_id": [], "title": [], "text": []}

    def keep_document(doc_id: str, title: str, text: str) -> None:
        columns["doc_id"].append(doc_id)
        columns["title"].append(title)
        columns["text"].append(text)

    scan = scan_beir(local_beir_parts(folder, split, policy), policy, keep_document)
    return BeirFolder(
        path=folder,
        split=split,
        corpus=pa.table(columns),
        queries=scan.queries,
        qrels=scan.qrels,
    )


def document_text(title: str | None, text: str) -> str:
    """How a BEIR document becomes one passage: title and text, as BEIR's evaluators join them."""
    return f"{title} {text}".strip() if title else text
