"""Sharded Parquet: atomic writing, streaming reading, and validation against the manifest.

Layout of a shard set (one folder)::

    train-00000-of-00003.parquet   zstd Parquet, one schema of pipeline.schemas
    ...
    manifest.json                  rows, bytes and sha256 per shard; schema fingerprint; config

Besides the pipeline's own tables, a writer takes any explicit Arrow schema and may write JSON
Lines (one object per row) into a sub-folder: that is how exports for other trainers are
written and validated with the same machinery.

Writing goes through hidden `.part-NNNNN.parquet` files (each written to a temporary name,
fsynced and renamed); only when all parts exist are they renamed to their final
`train-i-of-N` names and the manifest is written, last. A writer killed at any point leaves
no manifest, so no reader takes the folder for a complete set, and a rerun starts clean.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from embedcurate.pipeline.atomic import atomic_path, fsync_dir, remove_temp_files, sha256_file
from embedcurate.pipeline.errors import ShardSetError
from embedcurate.pipeline.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    code_version,
    config_hash,
    now_iso,
    read_manifest,
    write_manifest,
)
from embedcurate.pipeline.schemas import (
    SCHEMA_VERSION,
    TableKind,
    conform,
    rows_to_table,
    schema_fingerprint,
    schema_for,
)

logger = logging.getLogger(__name__)

SHARD_PREFIX = "train"
ShardFormat = Literal["parquet", "jsonl"]
SHARD_PATTERN = re.compile(r"^train-(\d{5})-of-(\d{5})\.(parquet|jsonl)$")
PART_PATTERN = re.compile(r"^\.part-(\d{5})\.(parquet|jsonl)$")
DEFAULT_ROWS_PER_SHARD = 20_000
# Files a shard folder may hold beside its shards: the card, its plots, stage reports and the
# Croissant metadata.
ALLOWED_SIDE_FILES = {
    MANIFEST_NAME,
    "README.md",
    "card.json",
    "card.html",
    "report.json",
    "croissant.json",
}
ALLOWED_SIDE_DIRS = {"plots", "reports"}


def shard_name(index: int, total: int, file_format: ShardFormat = "parquet") -> str:
    return f"{SHARD_PREFIX}-{index:05d}-of-{total:05d}.{file_format}"


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp, compression="zstd", row_group_size=min(max(table.num_rows, 1), 5_000)
        )


def _write_jsonl(table: pa.Table, path: Path) -> None:
    """One JSON object per row, keys in schema order, UTF-8 kept as is (byte-stable)."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


_FILE_WRITERS = {"parquet": _write_parquet, "jsonl": _write_jsonl}


def table_kind(kind: str) -> TableKind | None:
    """The pipeline table `kind` names, or None for a self-described set (an export)."""
    try:
        return TableKind(kind)
    except ValueError:
        return None


class ShardWriter:
    """Stream tables into a shard set of `kind`, `rows_per_shard` rows per file.

    `kind` is a pipeline table, or with an explicit `schema` any name (an export's format);
    `file_format` picks Parquet or JSON Lines and `subdir` a folder for the data files (some
    trainers read every `.json*` file of the folder they are given).

    Use as a context manager: the set is finalised (renamed, manifest written) only on a
    clean exit. Output bytes depend only on the rows and the settings, so a rerun over the
    same input gives the same sha256 per shard.
    """

    def __init__(
        self,
        out_dir: str | Path,
        kind: TableKind | str,
        *,
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        config: dict[str, Any] | None = None,
        seeds: dict[str, int] | None = None,
        extra: dict[str, Any] | None = None,
        schema: pa.Schema | None = None,
        file_format: ShardFormat = "parquet",
        subdir: str = "",
    ) -> None:
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be at least 1")
        self.out_dir = Path(out_dir)
        self.data_dir = self.out_dir / subdir if subdir else self.out_dir
        self.subdir = subdir
        self.table_kind = table_kind(str(kind))
        if schema is None and self.table_kind is None:
            raise ValueError(f"{kind!r} is not a pipeline table: give its schema")
        self.kind = str(kind) if self.table_kind is None else self.table_kind.value
        self.schema = schema if schema is not None else schema_for(self.kind)
        self.file_format = file_format
        self.rows_per_shard = rows_per_shard
        self.config = config or {}
        self.seeds = seeds or {}
        self.extra = extra or {}
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._part_rows: list[int] = []
        self.manifest: Manifest | None = None

    def __enter__(self) -> ShardWriter:
        self._start_clean()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()

    def _start_clean(self) -> None:
        """Remove a previous set (manifest first, so it is never left pointing at new files)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        old_manifest = self.out_dir / MANIFEST_NAME
        if old_manifest.exists():
            old_manifest.unlink()
            fsync_dir(self.out_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.data_dir)
        for path in self.data_dir.iterdir():
            if SHARD_PATTERN.match(path.name) or PART_PATTERN.match(path.name):
                path.unlink()

    def _conform(self, table: pa.Table) -> pa.Table:
        if self.table_kind is not None:
            return conform(table, self.table_kind)
        return table.select(self.schema.names).cast(self.schema)

    def write(self, table: pa.Table) -> None:
        table = self._conform(table)
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        while self._buffered_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.table_kind is not None:
            self.write(rows_to_table(rows, self.table_kind))
        else:
            self.write(pa.Table.from_pylist(rows, schema=self.schema))

    def _part_path(self, index: int) -> Path:
        return self.data_dir / f".part-{index:05d}.{self.file_format}"

    def _flush(self, num_rows: int) -> None:
        combined = pa.concat_tables(self._buffer).combine_chunks()
        head, rest = combined.slice(0, num_rows), combined.slice(num_rows)
        _FILE_WRITERS[self.file_format](head, self._part_path(len(self._part_rows)))
        self._part_rows.append(head.num_rows)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered_rows = rest.num_rows

    def close(self) -> Manifest:
        if self.manifest is not None:
            return self.manifest
        if self._buffered_rows or not self._part_rows:
            # An empty table still gets one (empty) shard so that readers see its schema.
            if not self._buffer:
                self._buffer = [self.schema.empty_table()]
            self._flush(self._buffered_rows)
        total = len(self._part_rows)
        entries = []
        for index, num_rows in enumerate(self._part_rows):
            final = self.data_dir / shard_name(index, total, self.file_format)
            self._part_path(index).replace(final)
            entries.append(
                ShardEntry(
                    file=final.relative_to(self.out_dir).as_posix(),
                    rows=num_rows,
                    bytes=final.stat().st_size,
                    sha256=sha256_file(final),
                )
            )
        fsync_dir(self.data_dir)
        self.manifest = Manifest(
            kind=self.kind,
            schema_fingerprint=schema_fingerprint(self.schema),
            schema_version=SCHEMA_VERSION,
            shards=entries,
            config=self.config,
            config_hash=config_hash(self.config),
            code_version=code_version(),
            seeds=self.seeds,
            created_at=now_iso(),
            extra=self.extra,
        )
        write_manifest(self.out_dir, self.manifest)
        logger.info("wrote %d rows in %d shards to %s", self.manifest.num_rows, total, self.out_dir)
        return self.manifest


def write_shards(
    tables: pa.Table | Iterable[pa.Table],
    out_dir: str | Path,
    kind: TableKind | str,
    **writer_options: Any,
) -> Manifest:
    """Write one table, or a stream of tables, as a complete shard set; returns its manifest."""
    batches = [tables] if isinstance(tables, pa.Table) else tables
    with ShardWriter(out_dir, kind, **writer_options) as writer:
        for table in batches:
            writer.write(table)
    assert writer.manifest is not None
    return writer.manifest


def validate_shards(shard_dir: str | Path, kind: TableKind | str | None = None) -> list[str]:
    """Check a shard set against its manifest; returns the problems found (empty if valid).

    Checks, per shard: present, not truncated (size), content (sha256), schema (fingerprint
    of the file's schema against the manifest's and, if given, against `kind`'s), and its row
    count against the Parquet footer; then the manifest's total against the sum of its shards.
    The sha256 covers only the file, so a manifest whose counts were edited would otherwise
    still validate. Also flags files the manifest does not list. A self-described set (an
    export, whose kind is not a pipeline table) is checked against the fingerprint its
    manifest records.
    """
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        return [f"{shard_dir} is not a folder"]
    try:
        manifest = read_manifest(shard_dir)
    except ShardSetError as exc:
        return exc.problems
    problems: list[str] = []
    expected_kind = table_kind(str(kind)) if kind is not None else None
    if kind is not None and manifest.kind != (expected_kind or kind):
        problems.append(f"{MANIFEST_NAME}: holds a {manifest.kind} table, expected {kind}")
    declared = expected_kind or table_kind(manifest.kind)
    if declared is None:
        expected_fp = manifest.schema_fingerprint
    else:
        expected_fp = schema_fingerprint(schema_for(declared))
    if manifest.schema_fingerprint != expected_fp:
        problems.append(
            f"{MANIFEST_NAME}: schema fingerprint {manifest.schema_fingerprint} differs from this "
            f"code's {manifest.kind} schema ({expected_fp})"
        )
    for entry in manifest.shards:
        problems.extend(_check_shard(shard_dir / entry.file, entry, expected_fp))
    if manifest.recorded_num_rows is not None and manifest.recorded_num_rows != manifest.num_rows:
        problems.append(
            f"{MANIFEST_NAME}: num_rows says {manifest.recorded_num_rows}, but its shards list "
            f"{manifest.num_rows} rows in all"
        )
    listed = {entry.file for entry in manifest.shards}
    data_dirs = {Path(name).parts[0] for name in listed if len(Path(name).parts) > 1}
    for path in sorted(shard_dir.iterdir()):
        if path.name in listed or path.name in ALLOWED_SIDE_FILES:
            continue
        if path.is_dir() and path.name in ALLOWED_SIDE_DIRS:
            continue
        if path.is_dir() and path.name in data_dirs:
            problems.extend(_unlisted_in(shard_dir, path, listed))
            continue
        if path.is_file() and path.suffix == ".png":
            continue
        problems.append(f"{path.name}: extra file not listed in {MANIFEST_NAME}")
    return problems


def _unlisted_in(shard_dir: Path, data_dir: Path, listed: set[str]) -> list[str]:
    """Files of a data sub-folder that the manifest does not list."""
    return [
        f"{path.relative_to(shard_dir).as_posix()}: extra file not listed in {MANIFEST_NAME}"
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and path.relative_to(shard_dir).as_posix() not in listed
    ]


def _check_shard(path: Path, entry: ShardEntry, expected_fp: str) -> list[str]:
    if not path.is_file():
        return [f"{entry.file}: missing"]
    size = path.stat().st_size
    if size < entry.bytes:
        return [f"{entry.file}: truncated ({size} of {entry.bytes} bytes)"]
    if size > entry.bytes:
        return [f"{entry.file}: size {size} bytes, manifest says {entry.bytes}"]
    actual = sha256_file(path)
    if actual != entry.sha256:
        return [
            f"{entry.file}: sha256 mismatch (file {actual[:12]}…, manifest {entry.sha256[:12]}…)"
        ]
    if path.suffix != ".parquet":
        return []  # JSON Lines carry no schema of their own; size and sha256 vouch for them
    try:
        footer = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as exc:
        return [f"{entry.file}: unreadable Parquet ({exc})"]
    problems = []
    file_fp = schema_fingerprint(footer.schema.to_arrow_schema())
    if file_fp != expected_fp:
        problems.append(
            f"{entry.file}: schema mismatch (fingerprint {file_fp}, expected {expected_fp})"
        )
    if footer.num_rows != entry.rows:
        problems.append(
            f"{entry.file}: {footer.num_rows} rows in its Parquet footer, "
            f"manifest says {entry.rows}"
        )
    return problems


def require_valid(shard_dir: str | Path, kind: TableKind | str | None = None) -> Manifest:
    problems = validate_shards(shard_dir, kind)
    if problems:
        raise ShardSetError(shard_dir, problems)
    return read_manifest(shard_dir)


def read_parquet_file(path: Path) -> pa.Table:
    """One Parquet file as a table, read by `ParquetFile` rather than `pq.read_table`: the
    latter goes through pyarrow's dataset module, whose import pulls in pandas (about 0.2 s
    of a cached mining rerun that otherwise takes about a second)."""
    with pq.ParquetFile(path) as handle:
        return handle.read()


def shard_paths(shard_dir: str | Path) -> list[Path]:
    manifest = read_manifest(shard_dir)
    return [Path(shard_dir) / entry.file for entry in manifest.shards]


def iter_shards(
    shard_dir: str | Path, kind: TableKind | str | None = None, *, validate: bool = True
) -> Iterator[pa.Table]:
    """Yield the set's tables one shard at a time, so memory stays bounded by one shard."""
    manifest = require_valid(shard_dir, kind) if validate else read_manifest(shard_dir)
    for entry in manifest.shards:
        yield read_parquet_file(Path(shard_dir) / entry.file)


def read_shards(
    shard_dir: str | Path, kind: TableKind | str | None = None, *, validate: bool = True
) -> pa.Table:
    """The whole set as one table (for small sets and tests)."""
    manifest = require_valid(shard_dir, kind) if validate else read_manifest(shard_dir)
    tables = [read_parquet_file(Path(shard_dir) / e.file) for e in manifest.shards]
    return pa.concat_tables(tables) if tables else schema_for(manifest.kind).empty_table()


def is_complete(shard_dir: str | Path, expected_config_hash: str | None = None) -> bool:
    """True when the set validates and, if given, was written with this config hash."""
    if validate_shards(shard_dir):
        return False
    return (
        expected_config_hash is None or read_manifest(shard_dir).config_hash == expected_config_hash
    )
