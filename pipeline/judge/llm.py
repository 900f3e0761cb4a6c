"""An LLM judge through the generator backends (embedded llama.cpp, OpenAI-compatible, vLLM).

The prompt is data (`prompts/judge/<name>.yaml`, loaded and checked by the synthetic-data
template loader); chat models get its chat form, base models its few-shot completion form
with the JSON opened, so they only write `yes"}` or `no"}`. Answers pass through the
response cache, so a rerun makes no calls. Parsing is strict: the answer must be exactly the
JSON object the template's schema declares, or the pair is `unsure` (`unparsed`); a failed
call is `unsure` (`error`). An LLM gives no calibrated score here: positives score 1,
negatives 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from embedcurate.pipeline.blend import LLMJudgeConfig
from embedcurate.pipeline.generation.backends import (
    make_backend,
    prompt_form,
    repetition_penalty,
    wants_guided_json,
)
from embedcurate.pipeline.generation.cache import CachingGenerator, cache_key, response_cache
from embedcurate.pipeline.generation.prompts import PromptTemplate, load_judge_template
from embedcurate.pipeline.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GeneratorBackend,
    SamplingParams,
)
from embedcurate.pipeline.judge.verdicts import Judgement, JudgePair, Verdict

logger = logging.getLogger(__name__)

PASSAGE_CHARS = 1500  # longer candidates are cut: the packaged Gemma has a 4k context
ANSWER_KEY = "relevant"
ANSWERS = {"yes": Verdict.POSITIVE, "no": Verdict.NEGATIVE}


def parse_answer(text: str) -> Verdict | None:
    """The verdict in an answer that is exactly `{"relevant": "yes"|"no"}`, else None."""
    try:
        value: Any = json.loads(text.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or set(value) != {ANSWER_KEY}:
        return None
    answer = value[ANSWER_KEY]
    return ANSWERS.get(answer) if isinstance(answer, str) else None


class LLMJudge:
    """Asks an LLM, through a cached generator backend, whether each candidate is relevant."""

    def __init__(self, cfg: LLMJudgeConfig, backend: GeneratorBackend | None = None) -> None:
        self.cfg = cfg
        self.template: PromptTemplate = load_judge_template(cfg.prompt)
        gen = cfg.generator
        self.form = prompt_form(gen)
        self.guided = wants_guided_json(gen, self.form)
        self.backend = backend if backend is not None else make_backend(gen)
        self.cache = response_cache(gen)
        self.generator = CachingGenerator(self.backend, self.cache)
        self.name = f"llm:{self.backend.model_id}"
        self.prompt_id = self.template.prompt_id
        self.budget_left = cfg.max_calls  # None: unlimited
        # a base model without a grammar stops at the end of its JSON line
        stop = ("\n",) if self.form == "completion" and not self.guided else ()
        self.sampling = SamplingParams(
            max_tokens=gen.max_tokens,
            temperature=gen.temperature,
            seed=0,
            stop=stop,
            repetition_penalty=repetition_penalty(gen),
        )

    def request(self, pair: JudgePair) -> GenerationRequest:
        values = {"task": pair.task, "query": pair.query, "passage": pair.candidate[:PASSAGE_CHARS]}
        prompt = self.template.render(self.form, values, open_json=not self.guided)
        schema = self.template.output_schema if self.guided else None
        return GenerationRequest(prompt=prompt, sampling=self.sampling, json_schema=schema)

    def judge(self, pairs: Sequence[JudgePair]) -> list[Judgement]:
        """Judge pairs in order; those beyond the call budget are `unsure` (`budget`)."""
        allowed = len(pairs) if self.budget_left is None else min(len(pairs), self.budget_left)
        judgements: list[Judgement] = []
        for start in range(0, allowed, self.cfg.batch_size):
            judgements += self._judge_batch(
                pairs[start : min(allowed, start + self.cfg.batch_size)]
            )
        if self.budget_left is not None:
            self.budget_left -= allowed
        judgements += [Judgement.unsure(self.name, "budget")] * (len(pairs) - allowed)
        return judgements

    def _judge_batch(self, pairs: Sequence[JudgePair]) -> list[Judgement]:
        requests = [self.request(pair) for pair in pairs]
        results = self._generate(requests)
        judgements = []
        for request, result in zip(requests, results, strict=True):
            if result is None:
                judgements.append(Judgement.unsure(self.name, "error"))
                continue
            verdict = parse_answer(request.prompt.prefix + result.text)
            if verdict is None:
                judgements.append(Judgement.unsure(self.name, "unparsed"))
            else:
                score = 1.0 if verdict is Verdict.POSITIVE else 0.0
                judgements.append(Judgement(verdict, score, self.name))
        return judgements

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult | None]:
        """Results in order; None for a request whose call failed (the others are kept:
        each finished response was cached on arrival, so it is read back from the cache)."""
        try:
            return list(self.generator.generate(requests, desc="judge"))
        except GenerationError as exc:
            logger.warning("LLM judge: %s; the failed pairs are judged unsure", exc)
        identity = self.backend.cache_identity
        return [self.cache.get(cache_key(request, identity)) for request in requests]

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
