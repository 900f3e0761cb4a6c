"""Hugging Face `datasets` as a source: by hub id or local path, and BEIR in MTEB's hub layout.

The one pipeline module that imports `datasets` (lazily: it pulls in pandas and fsspec).
Rows are numbered from 1 so that errors can name them like lines of a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedcurate.pipeline.errors import InputError
from embedcurate.pipeline.sources.beir import BeirParts, RecordStream

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

# Builders `datasets` packages for plain data files, by file suffix.
_FILE_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


@dataclass(frozen=True)
class HubTable:
    """A loaded split: where it came from, its column names and numbered rows."""

    where: str
    columns: list[str]
    rows: Iterator[tuple[int, dict[str, Any]]]


def _numbered_rows(
    dataset: datasets.Dataset, label_names: dict[str, list[str]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows with ClassLabel integers turned into their names (labels mean something in text)."""
    for index, row in enumerate(dataset, start=1):
        for column, names in label_names.items():
            value = row.get(column)
            if isinstance(value, int) and 0 <= value < len(names):
                row[column] = names[value]
        yield index, row


def _class_label_names(dataset: datasets.Dataset) -> dict[str, list[str]]:
    import datasets

    return {
        name: list(feature.names)
        for name, feature in dataset.features.items()
        if isinstance(feature, datasets.ClassLabel)
    }


def _load_local(path: Path, config: str | None, split: str) -> datasets.Dataset:
    import datasets

    if path.is_dir() and (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if split not in loaded:
            raise InputError(path, f"split {split!r} not saved here; splits: {sorted(loaded)}")
        return loaded[split]
    if path.is_dir() and (path / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(path))
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise InputError(path, f"no datasets builder for {path.suffix!r} files")
        options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **options)
    return datasets.load_dataset(str(path), config, split=split)


def load_hf_split(
    hub_id: str | None, path: Path | None, config: str | None, split: str
) -> HubTable:
    """One split through `datasets.load_dataset` (hub id) or from a local file or folder."""
    import datasets

    where = str(path) if path is not None else f"{hub_id} ({config or 'default'}, {split})"
    try:
        if path is not None:
            dataset = _load_local(path, config, split)
        else:
            assert hub_id is not None
            dataset = datasets.load_dataset(hub_id, config, split=split)
    except (ValueError, OSError) as exc:  # OSError covers DatasetNotFoundError, no network
        raise InputError(where, f"cannot load the dataset: {exc}") from exc
    logger.info("loaded %s: %d rows", where, dataset.num_rows)
    return HubTable(
        where=where,
        columns=list(dataset.column_names),
        rows=_numbered_rows(dataset, _class_label_names(dataset)),
    )


def hub_beir_parts(hub_id: str, split: str) -> BeirParts:
    """A BEIR dataset in MTEB's hub layout: configs `corpus`, `queries` and `default` (qrels).

    MTEB mirrors (e.g. `mteb/scifact`) keep the corpus in config `corpus` (split `corpus`), the
    queries in config `queries` (split `queries`) and the qrels, one split per BEIR split, in
    the default config with columns `query-id`, `corpus-id` and `score`.
    """
    corpus = load_hf_split(hub_id, None, "corpus", "corpus")
    queries = load_hf_split(hub_id, None, "queries", "queries")
    qrels = load_hf_split(hub_id, None, "default", split)
    return BeirParts(
        corpus=RecordStream(corpus.where, corpus.rows),
        queries=RecordStream(queries.where, queries.rows),
        qrels=RecordStream(qrels.where, qrels.rows),
    )
