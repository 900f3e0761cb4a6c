"""A run folder carries no machine path: it can move, and another cache gives the same hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedcurate.pipeline.blend import MACHINE_LOCAL_KEYS, BlendConfig, parse_blend
from embedcurate.pipeline.manifest import MANIFEST_NAME, read_manifest
from embedcurate.pipeline.mining.embed_cache import default_cache_root
from embedcurate.pipeline.packaged import CACHE_ENV, cache_root
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.stages import run_stages

TOPICS = ["glacier ice snow", "coffee caffeine sleep", "rocket orbit launch", "bread flour oven"]


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"query": f"{TOPICS[i % 4]} question {i}?", "positive": f"{TOPICS[i % 4]} {i}"})
        for i in range(40)
    ]
    (folder / "qa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _blend(data: Path, cache: Path) -> BlendConfig:
    return parse_blend(
        {
            "name": "portable",
            "sources": [{"name": "qa", "kind": "jsonl", "path": "qa.jsonl", "task": "NQ"}],
            "generator": {"cache_dir": str(cache / "llm")},
            "teacher": {"model": "hashing:64", "cache_dir": str(cache / "emb")},
            "mining": {"num_negatives": 2, "range_max": 10},
            "train_after": {"out_dir": str(cache / "model")},
        },
        source="portable.yaml",
        base_dir=data,
    )


def _curate(run: Path, cfg: BlendConfig) -> None:
    run_stages(cfg, run, ["sources", "mine", "template", "card"])  # not the generator


def _text_files(run: Path) -> dict[str, str]:
    return {
        str(path.relative_to(run)): path.read_text(encoding="utf-8")
        for path in sorted(run.rglob("*"))
        if path.suffix in (".json", ".md", ".html")
    }


def test_a_moved_run_with_another_cache_keeps_its_hashes_and_names_no_machine_path(
    tmp_path,
) -> None:
    data = _data(tmp_path / "data")
    runs = {name: tmp_path / name / "runs" / "demo" for name in ("here", "there")}
    for name, run in runs.items():
        _curate(run, _blend(data, tmp_path / f"cache-{name}"))
    hashes = {
        name: {
            str(m.parent.relative_to(run)): read_manifest(m.parent).config_hash
            for m in sorted(run.rglob(MANIFEST_NAME))
        }
        for name, run in runs.items()
    }
    assert set(hashes["here"]) == {"pairs/qa", "corpus/qa", "mined", "train"}
    assert hashes["here"] == hashes["there"]
    for name, run in runs.items():
        for file, text in _text_files(run).items():
            for machine_path in (str(run), str(tmp_path / name), str(tmp_path / f"cache-{name}")):
                assert machine_path not in text, (file, machine_path)
    card = json.loads((runs["here"] / "train" / "card.json").read_text(encoding="utf-8"))
    assert card["lineage"]["blend_matches_manifest"] is True


def test_every_stage_counts_in_as_kept_plus_dropped_per_source(tmp_path) -> None:
    run = tmp_path / "run"
    _curate(run, _blend(_data(tmp_path / "data"), tmp_path / "cache"))
    stages = set()
    for path in sorted(run.rglob("report.json")):
        report = StageReport.load(path)
        stages.add(report.stage)
        for name, counts in report.sources.items():
            assert counts.balanced, (str(path.relative_to(run)), name, counts)
    assert stages == {"sources", "mine", "template"}


def test_portable_drops_every_machine_local_field_and_keeps_the_rest(tmp_path) -> None:
    cfg = _blend(_data(tmp_path / "data"), tmp_path / "cache")
    resolved, portable = cfg.resolved(), cfg.portable()
    assert resolved["teacher"]["cache_dir"] == str(tmp_path / "cache" / "emb")
    assert "cache_dir" not in portable["teacher"]
    assert "cache_dir" not in portable["generator"]
    assert "out_dir" not in portable["train_after"]
    for section in ("teacher", "generator", "train_after"):
        kept = {k: v for k, v in resolved[section].items() if k not in MACHINE_LOCAL_KEYS}
        assert portable[section] == kept
    assert "threads" in resolved["teacher"]  # the teacher's thread cap: this machine's alone
    assert "threads" not in portable["teacher"]
    assert portable["sources"] == resolved["sources"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_CACHE_HOME": "xdg"}, "xdg/embedcurate"),
        ({"XDG_CACHE_HOME": "xdg", CACHE_ENV: "own"}, "own"),
        ({}, "home/.cache/embedcurate"),
    ],
    ids=["xdg", "embedcurate-wins", "home"],
)
def test_the_cache_root_respects_xdg_cache_home(
    tmp_path, monkeypatch: pytest.MonkeyPatch, env: dict[str, Any], expected: str
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, str(tmp_path / value))
    assert cache_root() == tmp_path / expected
    assert default_cache_root() == tmp_path / expected / "embeddings"
