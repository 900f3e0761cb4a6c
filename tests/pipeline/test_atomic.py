"""Crash-safe writes under concurrency: the flow's source tasks share one process."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from embedcurate.pipeline.atomic import write_json_atomic


def test_threads_writing_the_same_file_never_rename_each_others_copy(tmp_path: Path) -> None:
    final = tmp_path / "report.json"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write_many(writer: int) -> None:
        start.wait()
        try:
            for i in range(200):
                write_json_atomic(final, {"writer": writer, "i": i})
        except OSError as exc:  # a lost temporary file shows up as FileNotFoundError
            errors.append(exc)

    threads = [threading.Thread(target=write_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(final.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
