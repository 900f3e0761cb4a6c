"""Test-wide settings: offline hubs, a throwaway Prefect home, and small row factories."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

from testkit.rows import make_pair_row

_PREFECT_HOME = tempfile.mkdtemp(prefix="embedcurate-prefect-")
# the teacher's embedding cache: never the user's ~/.cache from a test
os.environ.setdefault("EMBEDCURATE_CACHE_DIR", tempfile.mkdtemp(prefix="embedcurate-cache-"))
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def pair_rows() -> Callable[[int], list[dict[str, Any]]]:
    return lambda n: [make_pair_row(i) for i in range(n)]
