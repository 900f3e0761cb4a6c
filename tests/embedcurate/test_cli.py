from __future__ import annotations

from pathlib import Path

from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import shard_name, write_shards
from testkit.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_validate_accepts_a_good_set_and_names_a_bad_shard(tmp_path, pair_rows) -> None:
    out = tmp_path / "set"
    write_shards(
        rows_to_table(pair_rows(6), TableKind.PAIRS), out, TableKind.PAIRS, rows_per_shard=3
    )
    good = run_cli("validate", str(out))
    assert good.returncode == 0, good.stderr
    assert "6 rows in 2 shard(s)" in good.stdout

    (out / shard_name(1, 2)).unlink()
    bad = run_cli("validate", str(out))
    assert bad.returncode == 1
    assert "train-00001-of-00002.parquet: missing" in bad.stderr


def test_blend_check_prints_resolved_config_or_the_error(tmp_path) -> None:
    good = run_cli("blend", "check", "blends/demo.yaml")
    assert good.returncode == 0, good.stderr
    assert "valid blend demo" in good.stdout
    assert "rule: percpos:0.95" in good.stdout
    assert str(REPO / "blends" / "demo_data" / "beir-mini") in good.stdout

    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text("name: x\nsources: []\ngenerator: {backend: gpt}\n")
    bad = run_cli("blend", "check", str(bad_path))
    assert bad.returncode == 1
    assert str(bad_path) in bad.stderr
    assert "generator.backend" in bad.stderr
    assert "'embedded'" in bad.stderr


def test_blend_check_refuses_a_rule_parameter_out_of_range(tmp_path) -> None:
    demo = (REPO / "blends" / "demo.yaml").read_text(encoding="utf-8")
    assert "rule: percpos:0.95" in demo
    blend = tmp_path / "demo.yaml"
    blend.write_text(demo.replace("rule: percpos:0.95", "rule: percpos:1.5"), encoding="utf-8")
    (tmp_path / "demo_data").symlink_to(REPO / "blends" / "demo_data")
    result = run_cli("blend", "check", str(blend))
    assert result.returncode == 1
    assert "mining.rule: rule 'percpos:1.5': P must be in (0, 1]" in result.stderr


def test_paper_blend_check_says_what_it_needs() -> None:
    result = run_cli("blend", "check", "blends/nv-embed-v2.yaml")
    assert result.returncode == 0, result.stderr
    assert "needs: network, gpu" in result.stdout
