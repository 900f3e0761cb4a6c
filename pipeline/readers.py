"""Line-level readers for local files that report bad lines by file and line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import BadRowPolicy


def iter_jsonl(path: Path, policy: BadRowPolicy) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) per line; bad lines go to `policy` (raise or count)."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
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
    """Yield (line number, fields) per tab-separated line, skipping the header if present."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and header:
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                policy.bad(path, "invalid_utf8", line_no, str(exc))
                continue
            yield line_no, text.split("\t")
