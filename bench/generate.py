"""Generation throughput and answer yield on the packaged Gemma 3 270M (CPU).

    python bench/generate.py [--requests 8] [--concurrency 4] [--max-tokens 64] [--threads 1]
                             [--yield-examples 6] [--skip-yield] [--json PATH]

1. Client overhead: llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`) on
   the packaged GGUF, called with the same completion requests (a) directly with httpx at
   `--concurrency` and (b) through our `OpenAIBackend` at the same concurrency; rounds
   alternate which goes first so that load from other users of the machine hits both alike.
   Then the same against a loopback server answering after a fixed delay, where only the
   clients differ. Goal: ours at least 90% of direct.
2. Embedded throughput: the same requests through `EmbeddedBackend` (in-process llama.cpp).
3. Answer yield of the few-shot completion form for short-long examples: one request per
   answer (JSON opened, parsed afterwards), field by field (the stage's default) with
   repetition penalty 1.0 and 1.1, and llama.cpp's JSON-schema grammar. Counts answers that
   parse and pass the template schema, tokens and seconds.

Prints one table per part. No GPU here, so vLLM is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tests.llm_servers import LlamaServer, ScriptedServer

from embedcurate.pipeline.blend import GeneratorConfig
from embedcurate.pipeline.generation.cache import CachingGenerator, ResponseCache
from embedcurate.pipeline.generation.fielded import generate_fielded, object_steps
from embedcurate.pipeline.generation.filters import check_schema, parse_json_answer
from embedcurate.pipeline.generation.prompts import load_template
from embedcurate.pipeline.generation.stage import structural_schema
from embedcurate.pipeline.generation.types import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from embedcurate.pipeline.packaged import cache_root

REPO = Path(__file__).resolve().parents[1]

console = Console()
TASKS = [
    "Given a question about a hobby, retrieve articles that explain how to start it",
    "Given a city name, retrieve travel guides about it",
    "Given a symptom, retrieve patient information pages about its causes",
    "Given a programming error, retrieve forum posts that solve it",
]


def _requests(count: int, max_tokens: int, stop: tuple[str, ...]) -> list[GenerationRequest]:
    """Realistic prompts: the short-long few-shot completion form, JSON opened."""
    template = load_template("generate", "short-long")
    requests = []
    for i in range(count):
        values = {"task": TASKS[i % len(TASKS)], **template.draw_attributes(random.Random(i))}
        requests.append(
            GenerationRequest(
                prompt=template.render_completion(values),
                sampling=SamplingParams(
                    max_tokens=max_tokens,
                    temperature=0.8,
                    seed=i,
                    stop=stop,
                    repetition_penalty=1.1,
                ),
            )
        )
    return requests


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# --- part 1: our OpenAI backend against the server called directly -------------------------


async def _direct(base_url: str, requests: list[GenerationRequest], concurrency: int) -> dict:
    import httpx

    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(client: httpx.AsyncClient, request: GenerationRequest) -> None:
        nonlocal tokens
        sampling = request.sampling
        body = {
            "model": "gemma",
            "prompt": request.prompt.text,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stop": list(sampling.stop) or None,
            "repetition_penalty": 1.1,
            "repeat_penalty": 1.1,
        }
        async with semaphore:
            response = await client.post(f"{base_url}/completions", json=body)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client, r) for r in requests))
    return {"seconds": time.perf_counter() - started, "tokens": tokens}


def _ours(base_url: str, requests: list[GenerationRequest], concurrency: int) -> dict:
    from embedcurate.pipeline.generation.openai_backend import OpenAIBackend

    cfg = GeneratorConfig(
        backend="openai", base_url=base_url, model="gemma", concurrency=concurrency, timeout_s=600
    )
    results: list[GenerationResult] = []
    started = time.perf_counter()
    OpenAIBackend(cfg).generate(requests, lambda _, result: results.append(result))
    return {
        "seconds": time.perf_counter() - started,
        "tokens": sum(r.completion_tokens for r in results),
    }


def client_overhead(model_path: Path, args: argparse.Namespace, work: Path) -> list[dict]:
    requests = _requests(args.requests, args.max_tokens, stop=())
    server = LlamaServer(model_path, work / "server.log", threads=args.threads)
    rows = []
    try:
        server.wait_ready()
        _ours(server.base_url, requests[:1], 1)  # warm-up: model pages, few-shot prefix
        for round_number in range(args.rounds):
            names = ["direct httpx", "our OpenAIBackend"]
            for name in names if round_number % 2 == 0 else names[::-1]:  # alternate who's first
                if name == "direct httpx":
                    figures = asyncio.run(_direct(server.base_url, requests, args.concurrency))
                else:
                    figures = _ours(server.base_url, requests, args.concurrency)
                rows.append({"client": name, "round": round_number + 1, **figures})
                console.print(f"  {name} round {round_number + 1}: {figures}", highlight=False)
    finally:
        server.stop()
    return rows


def client_overhead_fixed_latency(args: argparse.Namespace) -> list[dict]:
    """The same comparison against a loopback server that answers after a fixed delay, so
    that only the clients differ (the CPU-bound llama.cpp server is noisy on a shared box)."""
    requests = _requests(args.latency_requests, 16, stop=())
    rows = []
    with ScriptedServer(delay_s=args.latency_s) as server:
        _ours(server.base_url, requests[:1], 1)
        for round_number in range(args.rounds):
            names = ["direct httpx", "our OpenAIBackend"]
            for name in names if round_number % 2 == 0 else names[::-1]:
                if name == "direct httpx":
                    figures = asyncio.run(_direct(server.base_url, requests, args.concurrency))
                else:
                    figures = _ours(server.base_url, requests, args.concurrency)
                rows.append({"client": name, "round": round_number + 1, **figures})
    return rows


# --- part 2: embedded throughput ------------------------------------------------------------


def embedded_throughput(args: argparse.Namespace) -> dict:
    from embedcurate.pipeline.generation.embedded_backend import EmbeddedBackend

    backend = EmbeddedBackend(GeneratorConfig(backend="embedded"))
    requests = _requests(args.requests, args.max_tokens, stop=())
    backend.generate(requests[:1], lambda *_: None)  # warm-up
    results: list[GenerationResult] = []
    started = time.perf_counter()
    backend.generate(requests, lambda _, result: results.append(result))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": sum(r.completion_tokens for r in results)}


# --- part 3: answer yield -------------------------------------------------------------------


def _valid(value: Any, verdict: Any, schema: dict) -> bool:
    return bool(verdict.keep and check_schema(value, schema).keep)


def answer_yield(args: argparse.Namespace, work: Path) -> list[dict]:
    from embedcurate.pipeline.generation.embedded_backend import EmbeddedBackend

    template = load_template("generate", "short-long")
    schema = template.output_schema
    backend = EmbeddedBackend(GeneratorConfig(backend="embedded"))
    rows = []
    variants = [
        ("one request, JSON opened", "oneshot", 1.1),
        ("field by field", "fielded", 1.0),
        ("field by field (default)", "fielded", 1.1),
        ("JSON-schema grammar", "grammar", 1.1),
    ]
    for name, mode, penalty in variants:
        requests = [
            replace(r, sampling=replace(r.sampling, repetition_penalty=penalty))
            for r in _requests(args.yield_examples, 320, stop=("\n",))
        ]
        cache = ResponseCache(work / f"cache-{mode}-{penalty}")  # fresh: every call is made
        generator = CachingGenerator(backend, cache)
        started = time.perf_counter()
        if mode == "fielded":
            keys, steps = object_steps(schema)
            answers = generate_fielded(
                generator,
                [r.prompt for r in requests],
                [r.sampling for r in requests],
                steps,
                "fielded",
            )
            valid = sum(
                _valid(dict(zip(keys, a.values, strict=True)), a.verdict, schema)
                for a in answers
                if a.verdict.keep
            )
        else:
            if mode == "grammar":
                unopened = [
                    template.render_completion(
                        {
                            "task": TASKS[i % len(TASKS)],
                            **template.draw_attributes(random.Random(i)),
                        },
                        open_json=False,
                    )
                    for i in range(len(requests))
                ]
                requests = [  # the grammar ends the answer; JSON may hold newlines as whitespace
                    replace(
                        r,
                        prompt=p,
                        json_schema=structural_schema(schema),
                        sampling=replace(r.sampling, stop=()),
                    )
                    for r, p in zip(requests, unopened, strict=True)
                ]
            results = generator.generate(requests)
            valid = sum(
                _valid(*parse_json_answer(result, request.prompt.prefix), schema)
                for request, result in zip(requests, results, strict=True)
            )
        seconds = time.perf_counter() - started
        stats = generator.stats
        rows.append(
            {
                "variant": name,
                "repetition_penalty": penalty,
                "valid": valid,
                "answers": len(requests),
                "calls": stats.num_backend_calls,
                "tokens": stats.completion_tokens,
                "seconds": seconds,
            }
        )
        console.print(f"  {rows[-1]}", highlight=False)
        cache.close()
    return rows


# --- report ---------------------------------------------------------------------------------


def _overhead_table(title: str, rows: list[dict], num_requests: int) -> None:
    """Totals over all rounds, and the median of the per-round ratios (ours / direct)."""
    table = Table(title=title)
    for column in ("client", "rounds", "requests/s", "tokens/s", "vs direct", "median round"):
        table.add_column(column, justify="left" if column == "client" else "right")
    totals = {}
    for name in ("direct httpx", "our OpenAIBackend"):
        runs = [r for r in rows if r["client"] == name]
        seconds = sum(r["seconds"] for r in runs)
        tokens = sum(r["tokens"] for r in runs)
        totals[name] = (len(runs) * num_requests / seconds, tokens / seconds)
    seconds = {(r["client"], r["round"]): r["seconds"] for r in rows}
    ratios = sorted(
        seconds[("direct httpx", n)] / seconds[("our OpenAIBackend", n)]
        for n in {r["round"] for r in rows}
    )
    median = ratios[len(ratios) // 2]
    for name, (rps, tps) in totals.items():
        ratio = rps / totals["direct httpx"][0]
        by_round = "" if name == "direct httpx" else f"{median:.1%}"
        table.add_row(name, str(len(ratios)), f"{rps:.3f}", f"{tps:.1f}", f"{ratio:.1%}", by_round)
    console.print(table)


def _print_tables(
    overhead: list[dict], latency: list[dict], embedded: dict, yields: list[dict], args: Any
) -> None:
    _overhead_table(
        f"OpenAI-compatible client vs direct, llama.cpp server ({args.threads} thread(s)), "
        f"{args.requests} requests x {args.max_tokens} tokens, concurrency {args.concurrency}",
        overhead,
        args.requests,
    )
    _overhead_table(
        f"OpenAI-compatible client vs direct, loopback server answering after "
        f"{args.latency_s * 1000:.0f} ms, {args.latency_requests} requests, "
        f"concurrency {args.concurrency}",
        latency,
        args.latency_requests,
    )

    table = Table(title="embedded backend (in-process llama.cpp), same requests")
    for column in ("threads", "requests", "tokens", "seconds", "tokens/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(args.threads),
        str(args.requests),
        str(embedded["tokens"]),
        f"{embedded['seconds']:.1f}",
        f"{embedded['tokens'] / embedded['seconds']:.1f}",
    )
    console.print(table)

    if yields:
        table = Table(
            title=f"short-long answers that parse and fit the schema, "
            f"{args.yield_examples} examples, max_tokens 320 per answer"
        )
        for column in (
            "variant",
            "rep. penalty",
            "valid",
            "calls",
            "tokens",
            "seconds",
            "tokens/s",
        ):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for row in yields:
            table.add_row(
                row["variant"],
                str(row["repetition_penalty"]),
                f"{row['valid']}/{row['answers']}",
                str(row["calls"]),
                str(row["tokens"]),
                f"{row['seconds']:.1f}",
                f"{row['tokens'] / row['seconds']:.1f}",
            )
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=64)
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads, both paths")
    parser.add_argument("--yield-examples", type=int, default=6)
    parser.add_argument("--skip-yield", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["EMBEDCURATE_LLAMA_THREADS"] = str(args.threads)

    from embedcurate.pipeline.packaged import packaged_gemma_path

    console.print(f"load before: {_uptime()}", highlight=False)
    model_path = packaged_gemma_path(cache_root() / "models")
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        work = Path(tmp)
        latency = client_overhead_fixed_latency(args)
        overhead = client_overhead(model_path, args, work)
        embedded = embedded_throughput(args)
        yields = [] if args.skip_yield else answer_yield(args, work)
    console.print(f"load after: {_uptime()}", highlight=False)
    _print_tables(overhead, latency, embedded, yields, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "overhead": overhead,
                    "latency": latency,
                    "embedded": embedded,
                    "yield": yields,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
