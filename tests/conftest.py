"""Test-wide settings: offline hubs, a throwaway Prefect home, and small row factories."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="embedcurate-prefect-")
# the teacher's embedding cache: never the user's ~/.cache from a test
os.environ.setdefault("EMBEDCURATE_CACHE_DIR", tempfile.mkdtemp(prefix="embedcurate-cache-"))
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture
def pair_rows() -> Callable[[int], list[dict[str, Any]]]:
    return lambda n: [make_pair_row(i) for i in range(n)]
