"""StageReport: what a stage read, kept and dropped, with a reason for every drop.

Every stage returns one and writes it as JSON beside its output, so the data card can show
rows in, kept and dropped per source and reason. Nothing is dropped without being counted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedcurate.pipeline.atomic import write_json_atomic
from embedcurate.pipeline.manifest import now_iso

REPORT_NAME = "report.json"


def relative_to_folder(path: str | Path, folder: Path) -> str:
    """`path` relative to `folder` (`..` steps allowed), for files that must not carry this
    machine's absolute paths; a relative path is taken as already relative."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    return os.path.relpath(path.resolve(), folder.resolve())


@dataclass
class SourceCounts:
    """One source's records: `num_in = num_kept + num_dropped` always holds.

    `num_rows` is the rows written for the kept records, when a record can give more than
    one (an STS pair gives both directions; a retrieval line may list several positives);
    None means one row per kept record.
    """

    num_in: int = 0
    num_kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    num_rows: int | None = None

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def rows_written(self) -> int:
        return self.num_kept if self.num_rows is None else self.num_rows

    @property
    def balanced(self) -> bool:
        return self.num_in == self.num_kept + self.num_dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_in": self.num_in,
            "num_kept": self.num_kept,
            "num_dropped": self.num_dropped,
            "num_rows": self.rows_written,
            "dropped": dict(sorted(self.dropped.items())),
        }


@dataclass
class StageReport:
    """Counts of one stage run. `details` holds stage-specific figures (timings, scores)."""

    stage: str
    out_dir: str = ""
    sources: dict[str, SourceCounts] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str = ""
    elapsed_s: float = 0.0
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def _source(self, source: str) -> SourceCounts:
        return self.sources.setdefault(source, SourceCounts())

    def read(self, source: str, n: int = 1) -> None:
        self._source(source).num_in += n

    def keep(self, source: str, n: int = 1) -> None:
        self._source(source).num_kept += n

    def drop(self, source: str, reason: str, n: int = 1) -> None:
        if n:
            self._source(source).dropped[reason] += n

    @property
    def num_in(self) -> int:
        return sum(c.num_in for c in self.sources.values())

    @property
    def num_kept(self) -> int:
        return sum(c.num_kept for c in self.sources.values())

    @property
    def num_rows(self) -> int:
        """Rows written over all sources (more than `num_kept` where a record gives several)."""
        return sum(c.rows_written for c in self.sources.values())

    @property
    def dropped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.sources.values():
            total.update(counts.dropped)
        return total

    def finish(self) -> StageReport:
        self.finished_at = now_iso()
        self.elapsed_s = round(time.perf_counter() - self._t0, 3)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "out_dir": self.out_dir,
            "num_in": self.num_in,
            "num_kept": self.num_kept,
            "num_rows": self.num_rows,
            "dropped": dict(sorted(self.dropped.items())),
            "sources": {name: c.to_dict() for name, c in sorted(self.sources.items())},
            "details": self.details,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": self.elapsed_s,
        }

    def save(self, out_dir: str | Path, name: str = REPORT_NAME) -> Path:
        """Write the report into `out_dir`; its `out_dir` field is written relative to that
        folder, so a run folder can move without its reports naming the old place."""
        path = Path(out_dir) / name
        payload = self.to_dict()
        if payload["out_dir"]:
            payload["out_dir"] = relative_to_folder(payload["out_dir"], path.parent)
        write_json_atomic(path, payload)
        return path

    @classmethod
    def load(cls, path: str | Path) -> StageReport:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        report = cls(stage=payload["stage"], out_dir=payload.get("out_dir", ""))
        for name, counts in payload.get("sources", {}).items():
            report.sources[name] = SourceCounts(
                num_in=counts["num_in"],
                num_kept=counts["num_kept"],
                dropped=Counter(counts.get("dropped", {})),
                num_rows=counts.get("num_rows"),
            )
        report.details = payload.get("details", {})
        report.started_at = payload.get("started_at", "")
        report.finished_at = payload.get("finished_at", "")
        report.elapsed_s = payload.get("elapsed_s", 0.0)
        return report
