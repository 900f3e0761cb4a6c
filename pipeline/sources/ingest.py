"""Ingest a single folder or file given on a command line: the one-source blend that reads
it, and a corpus file merged into the corpus that source brought.

`embedcurate pairs --beir` and `embedcurate mine --beir|--pairs` both build their blend
here, so they agree on names, kinds and which tasks they accept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from embedcurate.pipeline.blend import BlendConfig, format_validation_error
from embedcurate.pipeline.errors import BadRowPolicy, ConfigError, InputError
from embedcurate.pipeline.instructions import UnknownTaskError, load_instruction_table
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import is_complete, read_shards, write_shards
from embedcurate.pipeline.sources.readers import iter_jsonl

PAIRS_SUFFIX_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


def source_name(path: Path) -> str:
    """A source name from a folder or file name (letters, digits, `_.-`)."""
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-") or "source"


def source_kind(path: Path, given_as: Literal["beir", "pairs"]) -> str:
    if given_as == "beir":
        if not path.is_dir():
            raise ConfigError(f"{path}: a BEIR source is a folder (corpus, queries, qrels)")
        return "beir"
    kind = "parquet" if path.suffix == ".parquet" else PAIRS_SUFFIX_KINDS.get(path.suffix)
    if kind is None:
        raise ConfigError(f"{path}: a pairs file is .jsonl, .csv, .tsv or .parquet")
    return kind


def one_source_blend(
    path: Path,
    *,
    given_as: Literal["beir", "pairs"],
    blend_name: str,
    task_hint: str,
    overrides: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
) -> BlendConfig:
    """A blend reading one BEIR folder or pairs file, with `overrides` laid over the blend's
    top-level sections (`seed`, `teacher`, `mining`, `output`) and `source` over the source.

    The task defaults to the folder's (or file's) name and must then be in the instruction
    table unless an instruction is given; `task_hint` says how to name one in the words of
    the caller's interface.
    """
    path = path.resolve()
    if not path.exists():
        raise ConfigError(f"{path}: not found")
    settings = {k: v for k, v in (source or {}).items() if v is not None}
    name = source_name(path)
    task = settings.get("task") or (path.name if given_as == "beir" else path.stem)
    data = {
        "name": f"{blend_name}-{name}",
        "sources": [
            {
                "name": name,
                "kind": source_kind(path, given_as),
                "path": str(path),
                **settings,
                "task": task,
            }
        ],
        **{k: v for k, v in (overrides or {}).items() if v not in (None, {})},
    }
    try:
        blend = BlendConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "the command's options")) from exc
    table = load_instruction_table()
    if task not in table and not settings.get("instruction"):
        raise UnknownTaskError(task, table.names, table.path, where=str(path), fix=task_hint)
    return blend


def add_corpus_file(corpus_file: Path, corpus_dir: Path, source: str) -> int:
    """Merge a corpus JSONL (`_id`, optional `title`, `text`) into the source's CORPUS set.

    Documents the sources stage wrote (the positives of a flat file) keep their ids; file
    documents with an id already present are skipped. Returns the number added.
    """
    rows: dict[str, dict[str, Any]] = {}
    if is_complete(corpus_dir):
        for row in read_shards(corpus_dir, TableKind.CORPUS).to_pylist():
            rows[row["doc_id"]] = row
    before = len(rows)
    for line_no, record in iter_jsonl(corpus_file, BadRowPolicy("raise")):
        doc_id = record.get("_id", record.get("doc_id", record.get("id")))
        text = record.get("text")
        if doc_id is None or not isinstance(text, str) or not text.strip():
            raise InputError(
                corpus_file, "needs an id (_id) and a non-empty string 'text'", line_no
            )
        rows.setdefault(
            str(doc_id),
            {"source": source, "doc_id": str(doc_id), "title": record.get("title"), "text": text},
        )
    write_shards(rows_to_table(list(rows.values()), TableKind.CORPUS), corpus_dir, TableKind.CORPUS)
    return len(rows) - before
