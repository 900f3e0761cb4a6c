from __future__ import annotations

import re
import subprocess
from pathlib import Path

from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.shards import validate_shards
from testkit.cli import run_cli
from testkit.llm_servers import ScriptedServer

REPO = Path(__file__).resolve().parents[2]


def generate_from(
    server: ScriptedServer, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`embedcurate generate` against the scripted OpenAI-compatible server, as a base model."""
    return run_cli(
        "generate", "--backend", "openai", "--base-url", server.base_url,
        "--model", "scripted-llm", "--model-kind", "base", *args, **env,
    )  # fmt: skip


def test_generate_against_an_openai_compatible_server_prints_kept_and_dropped(
    tmp_path: Path,
) -> None:
    out = tmp_path / "synthetic"
    with ScriptedServer() as server:
        server.copy_query_when("ambiguous")
        result = generate_from(
            server,
            "--tasks", "2",
            "--examples-per-task", "3",
            "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = StageReport.load(out / "report.json")
    assert validate_shards(out, "pairs") == []
    kept = re.search(r"kept\s+\S\s+(\d+)", result.stdout)
    copied = re.search(r"dropped: query_in_document\s+\S\s+(\d+)", result.stdout)
    assert kept is not None
    assert copied is not None
    assert (int(kept.group(1)), int(copied.group(1))) == (
        report.num_kept,
        report.dropped["query_in_document"],
    )
    assert server.copied_queries == report.dropped["query_in_document"] > 0
    assert f"{report.num_kept} rows" in result.stdout
    assert "brainstorm short-long: 2 task(s)" in result.stdout
    assert "generate short-long" in result.stderr  # the progress bar


def test_generate_names_what_is_missing(tmp_path: Path) -> None:
    result = run_cli("generate", "--backend", "openai", "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "--model is required" in result.stderr

    with ScriptedServer() as server:
        server.fail_when("Area:", "http_401")
        failed = generate_from(
            server,
            "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "y"),
        )  # fmt: skip
    assert failed.returncode == 1
    assert server.base_url in failed.stderr
    assert "AuthenticationError" in failed.stderr


def test_a_key_the_server_echoes_never_reaches_the_terminal(tmp_path: Path) -> None:
    key = "zq7PLANTEDkey0490xyzVALUE"
    with ScriptedServer() as server:
        server.fail_when("Area:", "http_401_echo")
        failed = generate_from(
            server,
            "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "y"),
            OPENAI_API_KEY=key,
        )  # fmt: skip
        assert failed.returncode == 1
        assert server.faults_served["http_401_echo"] == 1  # no retry, nothing sent after it
        assert key not in failed.stdout + failed.stderr
        assert "Bearer" in failed.stderr


def test_generate_timeout_option_bounds_each_request(tmp_path: Path) -> None:
    with ScriptedServer(stall_s=3.0) as server:
        server.fail_next("stall", 100)
        failed = generate_from(
            server,
            "--tasks", "1",
            "--timeout", "0.3",
            "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "y"),
        )  # fmt: skip
    assert failed.returncode == 1
    assert "APITimeoutError" in failed.stderr
