from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from embedcurate.pipeline.blend import SourceConfig, load_blend
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.instructions import (
    UnknownTaskError,
    load_instruction_table,
    parse_instruction_table,
    render,
)
from embedcurate.pipeline.schemas import TaskType
from embedcurate.pipeline.sources.stage import resolve_task

REPO = Path(__file__).resolve().parents[2]


def test_render_puts_the_definition_in_the_template_and_reports_its_span() -> None:
    rendered = render("Given a claim, find evidence", "coffee causes cancer")
    assert rendered.text == "Instruct: Given a claim, find evidence\nQuery: coffee causes cancer"
    start, end = rendered.instruction_span
    assert start == 0
    assert rendered.text[start:end] == "Instruct: Given a claim, find evidence\nQuery: "
    assert rendered.text[end:] == "coffee causes cancer"
    assert rendered.instruction_chars == end


def test_an_empty_definition_leaves_the_text_untemplated() -> None:
    rendered = render("", "plain")
    assert (rendered.text, rendered.instruction_chars) == ("plain", 0)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("scifact", "SciFact"),
        ("SCIFACT", "SciFact"),
        ("trec-covid", "TRECCOVID"),
        ("fiqa", "FiQA2018"),
        ("webis-touche2020", "Touche2020"),
        ("stsb", "STSBenchmark"),
        ("msmarco", "MSMARCO"),
    ],
)
def test_lookup_ignores_case_and_punctuation_and_knows_aliases(name: str, canonical: str) -> None:
    assert load_instruction_table().get(name).name == canonical


def test_unknown_task_is_an_error_listing_the_known_ones() -> None:
    table = load_instruction_table()
    with pytest.raises(UnknownTaskError) as info:
        table.get("NoSuchTask")
    message = str(info.value)
    assert "'NoSuchTask'" in message
    for known in ("MSMARCO", "SciFact", "Banking77Classification", "STSBenchmark"):
        assert known in message
    assert "set the source's `task:` to a known task, or give it an `instruction:`" in message


def test_unknown_task_error_can_say_the_fix_in_a_commands_flags() -> None:
    with pytest.raises(UnknownTaskError) as info:
        load_instruction_table().get("NoSuchTask", "source 'x'")
    on_cli = info.value.reworded("name a known task with --task", where="--beir my-data")
    assert str(on_cli).startswith("--beir my-data: unknown task 'NoSuchTask'")
    assert "; name a known task with --task. Known tasks: " in str(on_cli)
    assert "`instruction:`" not in str(on_cli)
    assert on_cli.known == info.value.known


def test_every_task_the_bundled_blends_name_is_in_the_table_with_their_type() -> None:
    table = load_instruction_table()
    for blend_file in ("blends/demo.yaml", "blends/nv-embed-v2.yaml"):
        blend = load_blend(REPO / blend_file, check_paths=False)
        for source in blend.sources:
            entry = table.get(source.task or source.name)
            assert entry.task_type == TaskType(source.task_type), (blend_file, source.name)


def test_the_table_covers_the_public_training_sets_and_task_types() -> None:
    table = load_instruction_table()
    for name in ("MSMARCO", "NQ", "HotpotQA", "FEVER", "SQuAD", "FiQA2018", "StackExchange"):
        assert table.get(name).task_type == TaskType.RETRIEVAL
    for name in ("ArguAna", "BioASQ", "PAQ", "TriviaQA", "NLI"):
        assert table.get(name).task_type == TaskType.RETRIEVAL
    assert table.get("DemoTopicsClassification").task_type == TaskType.CLASSIFICATION
    assert table.get("TwentyNewsgroupsClustering").task_type == TaskType.CLUSTERING
    sts = table.get("STSBenchmark")
    assert sts.task_type == TaskType.STS
    assert sts.symmetric
    assert not table.get("MSMARCO").symmetric
    definitions = [table.get(name).definition for name in table.names]
    assert all(d and not d.endswith(".") and "\n" not in d for d in definitions)


def test_names_that_clash_after_normalising_are_refused(tmp_path) -> None:
    text = yaml.safe_dump(
        {
            "version": 1,
            "tasks": {
                "SciFact": {"type": "retrieval", "definition": "a"},
                "Other": {"type": "retrieval", "definition": "b", "aliases": ["sci-fact"]},
            },
        }
    )
    with pytest.raises(ConfigError, match="clashes with") as info:
        parse_instruction_table(text, tmp_path / "t.yaml")
    assert "SciFact" in str(info.value)
    assert "Other" in str(info.value)


def test_a_bad_entry_names_the_table_and_the_key(tmp_path) -> None:
    text = "version: 1\ntasks:\n  X: {type: ranking, definition: d}\n"
    with pytest.raises(ConfigError) as info:
        parse_instruction_table(text, tmp_path / "t.yaml")
    assert "t.yaml" in str(info.value)
    assert "tasks.X.type" in str(info.value)


def _source(**fields: object) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "s", "kind": "jsonl", "path": "x.jsonl", **fields},
        context={"check_paths": False},
    )


def test_source_instruction_overrides_the_table_and_unknown_tasks_need_one() -> None:
    table = load_instruction_table()
    task = resolve_task(_source(task="SciFact", instruction="Find abstracts"), table)
    assert (task.task_name, task.definition, task.stage) == ("SciFact", "Find abstracts", 1)
    own = resolve_task(_source(task="MyTask", instruction="Match tickets"), table)
    assert (own.task_name, own.definition, own.task_type) == (
        "MyTask",
        "Match tickets",
        "retrieval",
    )
    with pytest.raises(UnknownTaskError):
        resolve_task(_source(task="MyTask"), table)


def test_task_type_and_stage_follow_the_table_unless_contradicted() -> None:
    table = load_instruction_table()
    task = resolve_task(_source(task="Banking77Classification"), table)
    assert (task.task_type, task.stage, task.symmetric) == (TaskType.CLASSIFICATION, 2, True)
    with pytest.raises(ConfigError, match="is a classification task"):
        resolve_task(_source(task="Banking77Classification", task_type="sts"), table)
    with pytest.raises(ConfigError, match="cannot feed stage 1"):
        resolve_task(_source(task="STSBenchmark", stage=1), table)
    assert resolve_task(_source(task="MSMARCO", stage=2), table).stage == 2
