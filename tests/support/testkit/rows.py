"""Row factories for the tables of the data contract."""

from __future__ import annotations

from typing import Any


def make_pair_row(index: int, **overrides: Any) -> dict[str, Any]:
    """A valid pairs-table row whose texts differ per index."""
    row: dict[str, Any] = {
        "example_id": f"ex-{index:06d}",
        "source": "unit",
        "task_type": "retrieval",
        "task_name": "UnitTask",
        "stage": 1,
        "instruction": "Given a question, retrieve passages that answer it",
        "query_id": f"q{index}",
        "query": f"what is item number {index}?",
        "positive_id": f"d{index}",
        "positive": f"Item number {index} is a thing described in document {index}.",
        "positive_ids": [f"d{index}"],
        "given_negatives": None,
        "label": None,
        "score": None,
        "symmetric": False,
    }
    row.update(overrides)
    return row
