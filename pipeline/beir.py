"""Read a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) with checks.

Every problem names the file and line: invalid UTF-8 or JSON, a missing id or text, an empty
text, a duplicate id, a qrels line naming a document or query that does not exist. Under
`on_error: drop` each is counted with its reason instead of raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.errors import BadRowPolicy, InputError
from pipeline.readers import iter_jsonl, iter_tsv


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


def _read_texts(
    path: Path, policy: BadRowPolicy, *, with_title: bool
) -> dict[str, tuple[str, str]]:
    """id -> (title, text) for a BEIR JSONL file."""
    records: dict[str, tuple[str, str]] = {}
    for line_no, record in iter_jsonl(path, policy):
        record_id = record.get("_id")
        text = record.get("text")
        if record_id is None or not isinstance(text, str):
            policy.bad(path, "missing_field", line_no, "needs '_id' and a string 'text'")
            continue
        record_id = str(record_id)
        title = str(record.get("title") or "") if with_title else ""
        if not text.strip() and not title.strip():
            policy.bad(path, "empty_text", line_no, f"id {record_id!r}")
            continue
        if record_id in records:
            policy.bad(path, "duplicate_id", line_no, f"id {record_id!r} seen before")
            continue
        records[record_id] = (title, text)
    return records


def _read_qrels(
    path: Path,
    policy: BadRowPolicy,
    query_ids: set[str],
    doc_ids: set[str],
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line_no, fields in iter_tsv(path, policy):
        if len(fields) < 3:
            policy.bad(path, "malformed_qrels", line_no, "needs query-id, corpus-id, score")
            continue
        query_id, doc_id, score_text = fields[0], fields[1], fields[2]
        try:
            score = int(float(score_text))
        except ValueError:
            policy.bad(path, "malformed_qrels", line_no, f"score {score_text!r} is not a number")
            continue
        if query_id not in query_ids:
            policy.bad(path, "unknown_query", line_no, f"query {query_id!r} not in queries.jsonl")
            continue
        if doc_id not in doc_ids:
            policy.bad(path, "unknown_document", line_no, f"document {doc_id!r} not in corpus")
            continue
        if score > 0:
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


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
    files = {
        "corpus": folder / "corpus.jsonl",
        "queries": folder / "queries.jsonl",
        "qrels": folder / "qrels" / f"{split}.tsv",
    }
    for name, file in files.items():
        if not file.is_file():
            raise InputError(file, f"BEIR {name} file not found")
    docs = _read_texts(files["corpus"], policy, with_title=True)
    queries = {
        qid: text
        for qid, (_, text) in _read_texts(files["queries"], policy, with_title=False).items()
    }
    qrels = _read_qrels(files["qrels"], policy, set(queries), set(docs))
    corpus = pa.table(
        {
            "doc_id": list(docs),
            "title": [title for title, _ in docs.values()],
            "text": [text for _, text in docs.values()],
        }
    )
    return BeirFolder(
        path=folder,
        split=split,
        corpus=corpus,
        queries={qid: queries[qid] for qid in qrels},
        qrels=qrels,
    )


def document_text(title: str | None, text: str) -> str:
    """How a BEIR document becomes one passage: title and text, as BEIR's evaluators join them."""
    return f"{title} {text}".strip() if title else text
