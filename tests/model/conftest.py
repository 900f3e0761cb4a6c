"""Fixtures for the model tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.tiny import build_tiny_backbone


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """structure -> folder of a saved tiny decoder (built once per session)."""
    root = tmp_path_factory.mktemp("tiny-backbones")
    return lambda structure: build_tiny_backbone(root / structure, structure)


@pytest.fixture(autouse=True)
def single_thread_torch() -> Iterator[None]:
    """The tiny models are far too small to share between threads: one thread is faster, and
    on a busy machine OpenMP's spinning threads otherwise slow tiny matmuls tenfold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
