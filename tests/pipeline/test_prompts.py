from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from embedcurate.pipeline.generation.prompts import (
    PromptError,
    load_template,
    load_template_file,
    template_path,
)

TYPES = ["short-long", "long-short", "short-short", "long-long", "sts", "classification"]


def _values(template, rng: random.Random) -> dict[str, object]:
    values: dict[str, object] = dict(template.draw_attributes(rng))
    for name in template.variables - set(values):
        values[name] = {"task": "Given a topic, retrieve articles about it", "num_tasks": 3}[name]
    return values


@pytest.mark.parametrize("step", ["brainstorm", "generate"])
@pytest.mark.parametrize("task_type", TYPES)
def test_every_shipped_template_renders_both_forms(step: str, task_type: str) -> None:
    template = load_template(step, task_type)
    values = _values(template, random.Random(0))
    chat = template.render("chat", values)
    completion = template.render("completion", values)
    assert chat.messages[-1].role == "user"
    assert "${" not in chat.messages[-1].content
    assert "${" not in completion.text
    # the completion form: finished one-line JSON examples, then the new item, JSON opened
    assert completion.text.endswith(template.json_opening())
    assert completion.prefix == template.json_opening()
    example_lines = [line for line in completion.text.splitlines() if line.startswith("{")][:-1]
    expected = [e.output for e in template.spec.completion.examples]
    assert [json.loads(line) for line in example_lines] == expected
    unopened = template.render("completion", values, open_json=False)
    assert unopened.prefix == ""
    assert completion.text.startswith(unopened.text)
    assert len(template.prompt_id) == 16


def test_rendering_with_a_missing_or_undeclared_variable_is_an_error() -> None:
    template = load_template("generate", "short-long")
    values = _values(template, random.Random(1))
    missing = {k: v for k, v in values.items() if k != "difficulty"}
    with pytest.raises(PromptError, match=r"missing variable\(s\) \['difficulty'\]") as info:
        template.render_chat(missing)
    assert str(template_path("generate", "short-long")) in str(info.value)
    with pytest.raises(PromptError, match=r"undeclared variable\(s\) \['tone'\]"):
        template.render_completion({**values, "tone": "friendly"})


def _copy_template(tmp_path: Path, step: str, task_type: str) -> tuple[Path, dict]:
    source = template_path(step, task_type)
    target = tmp_path / "synthetic" / step / f"{task_type}.yaml"
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    return target, yaml.safe_load(source.read_text())


def test_a_template_text_using_an_undeclared_variable_does_not_load(tmp_path: Path) -> None:
    target, data = _copy_template(tmp_path, "generate", "short-long")
    data["chat"]["user"] += "\nWrite in a ${tone} tone."
    target.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match=r"chat.user uses undeclared variable\(s\) \['tone'\]"):
        load_template("generate", "short-long", prompts_dir=tmp_path)


def test_a_few_shot_example_must_fit_the_schema_order(tmp_path: Path) -> None:
    target, data = _copy_template(tmp_path, "generate", "short-long")
    output = data["completion"]["examples"][0]["output"]
    data["completion"]["examples"][0]["output"] = dict(reversed(list(output.items())))
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PromptError, match="completion example 1: keys not in the schema's order"):
        load_template_file(target)


def test_the_hash_follows_the_content_not_the_file(tmp_path: Path) -> None:
    target, data = _copy_template(tmp_path, "brainstorm", "sts")
    original = load_template("brainstorm", "sts")
    assert load_template("brainstorm", "sts", prompts_dir=tmp_path).prompt_id == original.prompt_id
    data["completion"]["preamble"] = data["completion"]["preamble"] + "More lists follow.\n"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    edited = load_template("brainstorm", "sts", prompts_dir=tmp_path)
    assert edited.prompt_id != original.prompt_id


def test_attribute_draws_come_from_the_declared_choices() -> None:
    template = load_template("generate", "short-long")
    draws = [template.draw_attributes(random.Random(seed)) for seed in range(50)]
    for name, choices in template.spec.attributes.items():
        seen = {draw[name] for draw in draws}
        assert seen <= {str(c) for c in choices}
        assert len(seen) > 1 or len(choices) == 1
    assert template.draw_attributes(random.Random(7)) == template.draw_attributes(random.Random(7))
