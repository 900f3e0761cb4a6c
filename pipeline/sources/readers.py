"""Line-level readers for local files that report bad lines by file and line number.

Text is decoded as `utf-8-sig`: a byte-order mark, which editors on Windows write at the start
of UTF-8 files, is accepted and never becomes part of the first value or column name.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from embedcurate.pipeline.errors import BadRowPolicy, InputError

TEXT_ENCODING = "utf-8-sig"  # UTF-8, with a leading byte-order mark dropped when present


def iter_jsonl(path: Path, policy: BadRowPolicy) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) per line; bad lines go to `policy` (raise or count)."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode(TEXT_ENCODING)
            except UnicodeDecodeError as exc:
                policy.bad(path, "invalid_utf8", line_no, str(exc))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                policy.bad(path, "invalid_json", line_no, exc.msg)
                continue
            if not isinstance(record, dict):
                policy.bad(path, "not_an_object", line_no)
                continue
            yield line_no, record


def iter_tsv(
    path: Path, policy: BadRowPolicy, *, header: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) per tab-separated line, skipping line 1 when it is a header."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and header:
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode(TEXT_ENCODING).rstrip("\r\n")
            except UnicodeDecodeError as exc:
                policy.bad(path, "invalid_utf8", line_no, str(exc))
                continue
            yield line_no, text.split("\t")


def first_line_fields(path: Path, delimiter: str = "\t") -> list[str]:
    """The stripped fields of a file's first line (empty for an empty file), to tell a header
    from data before reading on."""
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        text = first.decode(TEXT_ENCODING)
    except UnicodeDecodeError as exc:
        raise InputError(path, f"invalid_utf8 on the first line: {exc}", 1) from exc
    text = text.rstrip("\r\n")
    return [field.strip() for field in text.split(delimiter)] if text.strip() else []


def _decoded_lines(path: Path, policy: BadRowPolicy, line_numbers: list[int]) -> Iterator[str]:
    """Decoded lines of `path`; appends each yielded line's number to `line_numbers`.

    A line that is not valid UTF-8 goes to `policy` and is skipped, so the csv module only
    ever sees text and the caller can still name the line a record started on.
    """
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(TEXT_ENCODING)
            except UnicodeDecodeError as exc:
                policy.bad(path, "invalid_utf8", line_no, str(exc))
                continue
            line_numbers.append(line_no)
            yield text


def read_header(path: Path, delimiter: str, *, quoting: bool = True) -> list[str]:
    """The column names on the first line of a delimited file (an error if unreadable)."""
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        text = first.decode(TEXT_ENCODING)
    except UnicodeDecodeError as exc:
        raise InputError(path, f"invalid_utf8 in the header: {exc}", 1) from exc
    dialect = {"quoting": csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE}
    row = next(csv.reader([text], delimiter=delimiter, **dialect), [])
    return [name.strip() for name in row]


def iter_delimited(
    path: Path,
    policy: BadRowPolicy,
    *,
    delimiter: str = ",",
    header: bool = True,
    quoting: bool = True,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, {column: value}) per record of a CSV-like file.

    With `header`, columns are named by the first line; without, by position ("0", "1", ...).
    `quoting=False` splits on every delimiter and treats quote characters as text (the STS
    Benchmark release needs this: its sentences contain unbalanced quotes). A record with
    fewer fields than the header lacks the missing columns; extra fields are ignored.
    """
    names = read_header(path, delimiter, quoting=quoting) if header else None
    line_numbers: list[int] = []
    dialect = {"quoting": csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE}
    reader = csv.reader(_decoded_lines(path, policy, line_numbers), delimiter=delimiter, **dialect)
    consumed = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            line_no = line_numbers[-1] if line_numbers else 1
            raise InputError(path, f"unreadable record: {exc}", line_no) from exc
        start_line = line_numbers[consumed]
        consumed = len(line_numbers)
        if header and start_line == 1:
            continue
        if not fields or not any(field.strip() for field in fields):
            continue
        if names is None:
            yield start_line, {str(i): value for i, value in enumerate(fields)}
        else:
            yield start_line, dict(zip(names, fields, strict=False))


def iter_parquet(path: Path, batch_size: int = 10_000) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number from 1, row) of a Parquet file, one record batch in memory at a time."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from exc
    row_no = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def parquet_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from exc
