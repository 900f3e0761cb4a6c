from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import embedcurate.model.trainer as trainer_module
from embedcurate.model.config import BackboneConfig, EmbedderConfig, TrainConfig
from embedcurate.model.data import TrainRow, TrainShards, build_contrastive_batch
from embedcurate.model.embedder import Embedder
from embedcurate.model.io import load_embedder
from embedcurate.model.losses import InfoNCELoss
from embedcurate.model.trainer import Trainer, list_checkpoints, resolve_precision, train
from embedcurate.pipeline.blend import TemplateStageConfig, parse_blend
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import write_shards
from embedcurate.pipeline.train_rows import run_template
from testkit.rows import make_pair_row
from testkit.tiny import TOPICS, retrieval_train_rows, tiny_train_config

CPU = torch.device("cpu")


def write_train(folder: Path, rows: list[dict[str, Any]]) -> Path:
    write_shards(rows_to_table(rows, TableKind.TRAIN), folder, TableKind.TRAIN, rows_per_shard=5)
    return folder


def as_train_rows(rows: list[dict[str, Any]]) -> list[TrainRow]:
    fields = {f.name for f in dataclasses.fields(TrainRow)}
    return [
        TrainRow(**{k: (tuple(v) if k == "negatives" else v) for k, v in r.items() if k in fields})
        for r in rows
    ]


def full_set_loss(embedder: Embedder, rows: list[TrainRow]) -> float:
    """InfoNCE over the whole small set as one batch, in-batch candidates on, eval mode."""
    batch = build_contrastive_batch(rows, num_hard_negatives=3)
    with torch.no_grad():
        embedder.eval()
        queries = embedder.embed(
            embedder.tokenize(batch.queries, batch.query_instruction_chars, max_length=48)
        )
        docs = embedder.embed(
            embedder.tokenize(batch.docs, batch.doc_instruction_chars, max_length=64)
        )
    out = InfoNCELoss(0.05)(queries, docs, batch.doc_owner, batch.positive_index, in_batch=True)
    return out.loss.item()


def stage_one(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, stages=(1,), stage1=dataclasses.replace(cfg.stage1, **changes))


def test_a_few_steps_on_a_small_retrieval_set_lower_the_loss(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    shards = write_train(tmp_path / "train", retrieval_train_rows())
    cfg = stage_one(tiny_train_config(tiny_backbone("mistral")), max_steps=12)
    rows = as_train_rows(retrieval_train_rows())
    untrained = Trainer(cfg, TrainShards(shards), tmp_path / "unused").embedder
    before = full_set_loss(untrained, rows)
    report = train(shards, tmp_path / "run", cfg)
    after = full_set_loss(load_embedder(tmp_path / "run", device=CPU), rows)
    assert after < 0.8 * before, (before, after)
    result = report.stages[0]
    assert (result.stage, result.start_step, result.steps) == (1, 0, 12)
    assert result.tokens_per_second is not None
    assert result.tokens_per_second > 0
    log = [
        json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in log)
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in log)  # the step's own clocks
    saved = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert saved["stages"][0]["steps"] == 12


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    shards = write_train(tmp_path / "train", retrieval_train_rows())
    cfg = stage_one(tiny_train_config(tiny_backbone("llama")), max_steps=4)
    run = tmp_path / "run"
    train(shards, run, cfg)
    texts = [r["query"] for r in retrieval_train_rows()]
    uninterrupted = load_embedder(run, device=CPU).encode(texts, max_length=48)
    assert [p.name for p in list_checkpoints(run)] == ["stage1-step00000002", "stage1-step00000004"]
    # a crash after the step-2 checkpoint: the later checkpoint and the stage model never landed
    shutil.rmtree(run / "checkpoints" / "stage1-step00000004")
    shutil.rmtree(run / "stage1")
    report = train(shards, run, cfg)
    assert (report.stages[0].start_step, report.stages[0].steps) == (2, 4)
    steps = [
        json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 3, 4]
    resumed = load_embedder(run, device=CPU).encode(texts, max_length=48)
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-6)
    # a finished stage resumes to nothing more to do
    again = train(shards, run, cfg)
    assert (again.stages[0].start_step, again.stages[0].steps) == (4, 4)


def test_a_run_folder_refuses_another_embedder(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    shards = write_train(tmp_path / "train", retrieval_train_rows())
    cfg = stage_one(tiny_train_config(tiny_backbone("qwen2")), max_steps=1)
    train(shards, tmp_path / "run", cfg)
    other = dataclasses.replace(cfg, embedder=dataclasses.replace(cfg.embedder, max_doc_length=32))
    with pytest.raises(ValueError, match="another embedder config"):
        train(shards, tmp_path / "run", other)


def test_in_batch_candidates_are_on_in_stage_one_and_off_in_stage_two(
    tiny_backbone: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = retrieval_train_rows() + retrieval_train_rows(stage=2)
    shards = write_train(tmp_path / "train", rows)
    base = tiny_train_config(tiny_backbone("mistral"))
    cfg = dataclasses.replace(
        base,
        stage1=dataclasses.replace(base.stage1, max_steps=2),
        stage2=dataclasses.replace(base.stage2, max_steps=2),
    )
    seen: list[tuple[bool, int]] = []
    original = InfoNCELoss.forward

    def spy(self: InfoNCELoss, *args: Any, in_batch: bool, **kwargs: Any) -> Any:
        out = original(self, *args, in_batch=in_batch, **kwargs)
        seen.append((in_batch, int(out.num_candidates.max())))
        return out

    monkeypatch.setattr(InfoNCELoss, "forward", spy)
    train(shards, tmp_path / "run", dataclasses.replace(cfg, stages=(1,)))
    loaded_from: list[Path] = []
    original_load = trainer_module.load_weights
    monkeypatch.setattr(
        trainer_module,
        "load_weights",
        lambda embedder, path: (loaded_from.append(Path(path)), original_load(embedder, path)),
    )
    train(shards, tmp_path / "run", dataclasses.replace(cfg, stages=(2,)))
    # stage 1: up to 4 rows x (positive + 2 negatives) candidates; stage 2: the row's own 3
    assert [flag for flag, _ in seen] == [True, True, False, False]
    assert all(count > 3 for _, count in seen[:2])
    assert [count for _, count in seen[2:]] == [3, 3]
    assert loaded_from == [tmp_path / "run" / "stage1"]  # stage 2 starts from stage 1


def test_judged_positives_leave_the_in_batch_candidates_of_their_row(
    tiny_backbone: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = retrieval_train_rows()
    passages = [r["positive"] for r in rows]
    # relabel mode: every other topic's passage was judged relevant to each query
    relabelled = [
        {**r, "extra_positives": [p for p in passages if p != r["positive"]]} for r in rows
    ]
    base = tiny_train_config(tiny_backbone("mistral"))
    cfg = stage_one(base, max_steps=2)
    counts: dict[str, list[int]] = {}
    original = InfoNCELoss.forward

    def spy(self: InfoNCELoss, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        counts.setdefault(current, []).extend(out.num_candidates.tolist())
        return out

    monkeypatch.setattr(InfoNCELoss, "forward", spy)
    for current, train_rows in (("plain", rows), ("relabelled", relabelled)):
        shards = write_train(tmp_path / current / "train", train_rows)
        train(shards, tmp_path / current / "run", cfg)
    assert min(counts["plain"]) > 1
    assert set(counts["relabelled"]) == {1}  # only the row's own positive is left


def test_gradcache_gives_the_gradient_of_the_whole_batch(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    shards = TrainShards(write_train(tmp_path / "train", retrieval_train_rows()))
    cfg = tiny_train_config(tiny_backbone("gemma3"))
    no_dropout = dataclasses.replace(
        cfg.embedder, lora=dataclasses.replace(cfg.embedder.lora, dropout=0.0)
    )
    # fp32: the two orders of summation agree to 1e-5 there; bf16 rounds each chunk's padding
    cfg = dataclasses.replace(cfg, embedder=no_dropout, precision="fp32")
    trainer = Trainer(cfg, shards, tmp_path / "run")
    with torch.no_grad():  # leave the identity start so every trainable weight gets gradient
        for param in trainer.embedder.trainable_parameters():
            param.add_(torch.randn_like(param) * 0.05)
    batch = build_contrastive_batch(as_train_rows(retrieval_train_rows()[:6]), 2)
    direct_stage = dataclasses.replace(cfg.stage1, cache_chunk_size=None)
    cached_stage = dataclasses.replace(cfg.stage1, cache_chunk_size=4)

    def gradients(stage_cfg: Any) -> tuple[float, list[torch.Tensor]]:
        trainer.embedder.zero_grad(set_to_none=True)
        if stage_cfg.cache_chunk_size is None:
            stats = trainer._direct_backward(batch, stage_cfg, 1.0, sync=True)
        else:
            stats = trainer._cached_backward(batch, stage_cfg, 1.0, sync=True)
        return stats.loss, [p.grad.clone() for p in trainer.embedder.trainable_parameters()]

    direct_loss, direct = gradients(direct_stage)
    cached_loss, cached = gradients(cached_stage)
    assert cached_loss == pytest.approx(direct_loss, rel=1e-5)
    assert sum(g.abs().sum().item() for g in direct) > 0
    for a, b in zip(direct, cached, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def test_auto_precision_is_bf16_where_the_hardware_computes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TrainConfig(embedder=EmbedderConfig(BackboneConfig("unused")), device="cpu")
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(cfg) == "fp32"
    assert resolve_precision(dataclasses.replace(cfg, precision="bf16")) == "bf16"  # asked for
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(cfg) == "bf16"
    assert resolve_precision(dataclasses.replace(cfg, precision="fp32")) == "fp32"  # kept
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision(dataclasses.replace(cfg, device="auto")) == "bf16"  # a GPU


def test_bf16_autocast_on_cpu_trains_lora_and_tracks_fp32(
    tiny_backbone: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`auto` on a CPU with native bf16: GradCache steps under bf16 autocast give finite losses
    within a few percent of fp32's (but not equal: bf16 did run), update the LoRA weights, and
    the run folder records the precision that ran. One process trains in both precisions, one
    after the other, as a long-lived worker would."""
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    shards = write_train(tmp_path / "train", retrieval_train_rows())
    cfg = stage_one(tiny_train_config(tiny_backbone("mistral")), max_steps=2, cache_chunk_size=4)
    untrained = Trainer(cfg, TrainShards(shards), tmp_path / "unused").embedder
    lora_before = {
        name: param.detach().clone()
        for name, param in untrained.named_parameters()
        if "lora_" in name
    }
    bf16 = train(shards, tmp_path / "bf16", cfg).stages[0]
    fp32 = train(shards, tmp_path / "fp32", dataclasses.replace(cfg, precision="fp32")).stages[0]

    recorded = json.loads((tmp_path / "bf16" / "train_config.json").read_text())
    assert recorded["config"]["precision"] == "bf16"
    assert bf16.first_loss is not None
    assert fp32.first_loss is not None
    assert math.isfinite(bf16.first_loss)
    assert bf16.last_loss is not None
    assert math.isfinite(bf16.last_loss)
    assert bf16.first_loss == pytest.approx(fp32.first_loss, rel=0.05)
    assert bf16.first_loss != fp32.first_loss
    trained = dict(load_embedder(tmp_path / "bf16", device=CPU).named_parameters())
    assert lora_before
    changed = [n for n, p in lora_before.items() if not torch.equal(trained[n].detach(), p)]
    assert len(changed) == len(lora_before)


def test_the_random_state_replays_dropout() -> None:
    state = trainer_module._RandomState.capture()
    first = torch.nn.functional.dropout(torch.ones(64), p=0.5)
    with state.replay():
        replayed = torch.nn.functional.dropout(torch.ones(64), p=0.5)
    after = torch.nn.functional.dropout(torch.ones(64), p=0.5)
    torch.testing.assert_close(first, replayed)
    assert not torch.equal(first, after)  # the outer stream went on undisturbed


def mined_rows() -> list[dict[str, Any]]:
    """MINED rows as mining leaves them: retrieval (stage 1) and classification (stage 2)."""
    rows = []
    for index, (topic, passage) in enumerate(TOPICS):
        others = [p for t, p in TOPICS if t != topic]
        rows.append(
            make_pair_row(
                index,
                task_name="SciFact",
                instruction="Given a question, retrieve the passage that answers it",
                query=f"what do you know about {topic}?",
                positive=passage,
                negatives=others[index % 5 : index % 5 + 3],
                negative_ids=[f"n{k}" for k in range(3)],
                neg_scores=[0.5, 0.4, 0.3],
                neg_ranks=[1, 2, 3],
                pos_score=0.9,
                candidates_dropped=0,
            )
        )
    for index in range(12):
        label = f"label-{index % 4}"
        rows.append(
            make_pair_row(
                100 + index,
                task_type="classification",
                task_name="UnitTopicClassification",
                stage=2,
                instruction="Classify the topic of the text",
                query=f"a sentence about {TOPICS[index % 4][0]} number {index}",
                positive=f"another sentence about {TOPICS[index % 4][0]}",
                label=label,
                symmetric=True,
                negatives=[f"a sentence about {TOPICS[(index + k) % 4][0]}" for k in (1, 2, 3)],
                negative_ids=["x", "y", "z"],
                neg_scores=[0.2, 0.2, 0.2],
                neg_ranks=[1, 2, 3],
                candidates_dropped=0,
            )
        )
    return rows


def test_trains_both_stages_on_shards_the_template_stage_wrote(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    mined = tmp_path / "mined"
    write_shards(rows_to_table(mined_rows(), TableKind.MINED), mined, TableKind.MINED)
    blend = parse_blend({"name": "unit", "generator": {}, "mining": {"num_negatives": 3}})
    run_template(mined, tmp_path / "train", TemplateStageConfig.of(blend))
    templated = TrainShards(tmp_path / "train")
    symmetric = [
        row
        for row in templated.iter_rows(stages={2}, seed=0, epoch=0, buffer=1)
        if row.task_type == "classification"
    ]
    assert symmetric[0].doc_instruction_chars > 0  # the template stage templated documents too
    base = tiny_train_config(tiny_backbone("qwen2"))
    cfg = dataclasses.replace(
        base,
        stage1=dataclasses.replace(base.stage1, max_steps=3),
        stage2=dataclasses.replace(base.stage2, max_steps=3),
    )
    report = train(tmp_path / "train", tmp_path / "run", cfg)
    assert [(r.stage, r.steps) for r in report.stages] == [(1, 3), (2, 3)]
    assert all(r.last_loss is not None and math.isfinite(r.last_loss) for r in report.stages)
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert recorded["shards_rows"] == 24


class _PlantedPayload:
    """Unpickling this makes a folder: proof that code from the run folder ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_a_planted_pickle_in_a_checkpoint_is_refused_not_run(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    shards = write_train(tmp_path / "train", retrieval_train_rows())
    cfg = stage_one(tiny_train_config(tiny_backbone("llama")), max_steps=2)
    run = tmp_path / "run"
    train(shards, run, cfg)
    checkpoint = list_checkpoints(run)[-1]
    assert json.loads((checkpoint / "random_state.json").read_text())["cpu"]
    assert "lr_lambdas" in json.loads((checkpoint / "scheduler.json").read_text())
    marker = tmp_path / "code-ran"
    torch.save({"state": _PlantedPayload(marker)}, checkpoint / "optimizer.pt")
    shutil.rmtree(run / "stage1")  # the stage is unfinished: a rerun resumes the checkpoint
    longer = stage_one(cfg, max_steps=3)
    with pytest.raises(ValueError, match="refused to load") as refused:
        train(shards, run, longer)
    assert not marker.exists()
    assert str(checkpoint) in str(refused.value)
    assert "--out" in str(refused.value)
