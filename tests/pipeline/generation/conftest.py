"""The packaged Gemma, assembled once per test session into a temporary models folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcurate.pipeline.packaged import packaged_gemma_path


@pytest.fixture(scope="session")
def gemma_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    packaged_gemma_path(models_dir)
    return models_dir


@pytest.fixture
def embedded_cache_dir(tmp_path: Path, gemma_models_dir: Path) -> Path:
    """A fresh response cache that shares the session's assembled model."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "models").symlink_to(gemma_models_dir, target_is_directory=True)
    return cache_dir
