"""The two-stage contrastive trainer (NV-Embed, arXiv 2405.17428, section 3.3).

Stage 1 trains on retrieval rows with in-batch and hard negatives; stage 2 starts from stage
1's weights and blends in classification, clustering and STS rows with hard negatives only,
one task type per batch. Each stage has its own learning rate, steps and batch size.

One optimizer step = `grad_accum_steps` micro-batches. A micro-batch is embedded either in one
go, or GradCache style (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"): embed it in chunks without keeping activations, take the loss and its
gradient with respect to the embeddings over the whole micro-batch, then re-run each chunk
with activations and backpropagate that gradient. The big batch's in-batch negatives then
cost one chunk's activation memory. The re-run replays each chunk's random state, so LoRA
dropout masks match the first pass.

`accelerate` runs the same loop on one CPU, one GPU or several (DDP or FSDP through
`accelerate launch`): each process takes every n-th micro-batch of the same seeded stream,
and gradients are synchronised once per optimizer step. `precision: auto` runs under bf16
autocast on GPUs and on CPUs that compute bf16 natively (AVX512-BF16, AMX: a MiniLM step is
1.5x faster there, `bench/RESULTS.md`), in fp32 on other CPUs; `train_config.json` records the
precision that ran. GPUs add gradient checkpointing (see BackboneConfig).

Layout of a run folder:

    train_config.json                      the resolved TrainConfig and the shard set
    train_log.jsonl                        one line per optimizer step: loss, accuracy, lr,
                                           tokens, seconds (wall) and cpu_seconds
    checkpoints/stage1-step00000500/       model/ (adapter, latent layer, embedder config),
                                           optimizer.pt (optimizer tensors, read back with
                                           weights_only=True), scheduler.json, random_state.json,
                                           trainer_state.json, train_config.json
    stage1/, stage2/                       the model after each finished stage
    train_report.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import pickle
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from embedcurate.model.config import StageConfig, TrainConfig
from embedcurate.model.data import (
    ContrastiveBatch,
    TokenBatch,
    TrainRow,
    TrainShards,
    build_contrastive_batch,
    stage_batches,
)
from embedcurate.model.embedder import Embedder, build_embedder
from embedcurate.model.io import load_weights, save_embedder
from embedcurate.model.losses import InfoNCELoss, LossOutput
from embedcurate.model.memory import fit_to_device
from embedcurate.pipeline.hardware import cpu_has_native_bf16

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
LOG_FILE = "train_log.jsonl"
REPORT_FILE = "train_report.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^stage(\d)-step(\d{8})$")
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
RANDOM_FILE = "random_state.json"


@dataclass
class StageResult:
    stage: int
    start_step: int  # > 0 when the stage resumed from a checkpoint
    steps: int  # optimizer steps done in total, resumed ones included
    first_loss: float | None  # of this invocation's first step
    last_loss: float | None
    last_accuracy: float | None
    tokens_per_second: float | None
    seconds: float
    model_dir: str


@dataclass
class TrainReport:
    run_dir: str
    shards_dir: str
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self) -> Path:
        path = Path(self.run_dir) / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path


@dataclass
class StepStats:
    loss: float
    accuracy: float
    num_tokens: int


def train(shards_dir: str | Path, out_dir: str | Path, cfg: TrainConfig) -> TrainReport:
    """Train the stages of `cfg` on a TRAIN shard set into `out_dir`, resuming if possible.

    Refuses a shard set whose manifest does not validate, and a run folder whose recorded
    embedder config differs from `cfg`'s (its checkpoints would not fit).
    """
    started = time.perf_counter()
    shards = TrainShards(shards_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _record_config(out_dir, cfg, shards)  # refuses another embedder before loading one
    trainer = Trainer(cfg, shards, out_dir)
    if trainer.cfg != cfg:
        _record_config(out_dir, trainer.cfg, shards)  # the precision and chunking chosen here
    report = TrainReport(run_dir=str(out_dir), shards_dir=str(shards.shards_dir))
    for stage in cfg.stages:
        report.stages.append(trainer.run_stage(stage))
    report.seconds = time.perf_counter() - started
    if trainer.accelerator.is_main_process:
        report.save()
    return report


def _record_config(out_dir: Path, cfg: TrainConfig, shards: TrainShards) -> None:
    path = out_dir / CONFIG_FILE
    payload = {
        "config": cfg.to_dict(),
        "shards_dir": str(shards.shards_dir.resolve()),
        "shards_config_hash": shards.manifest.config_hash,
        "shards_rows": shards.num_rows,
    }
    payload = json.loads(json.dumps(payload))  # tuples -> lists, as read back from the file
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous["config"]["embedder"] != payload["config"]["embedder"]:
            raise ValueError(
                f"{path}: this run folder holds another embedder config; its checkpoints "
                "cannot be resumed with this one (use a new --out folder)"
            )
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def make_accelerator(precision: Literal["fp32", "bf16"], cpu: bool) -> Any:
    """An `Accelerator` in `precision`, also in a process that trained before in another one.

    accelerate keeps one mixed precision per process and refuses an Accelerator that asks for
    another. A process that trains twice (a Prefect worker running train flows with different
    settings, a notebook, the test suite) must be able to, so a precision an earlier Trainer
    left is forgotten first; the process's device state (`PartialState`) stays as it is.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = "bf16" if precision == "bf16" else "no"
    if AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed, cpu=cpu)


class Trainer:
    def __init__(self, cfg: TrainConfig, shards: TrainShards, out_dir: Path) -> None:
        cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg))
        self.cfg = cfg
        self.shards = shards
        self.out_dir = out_dir
        self.accelerator = make_accelerator(cfg.precision, cpu=cfg.device == "cpu")
        logger.info("precision: %s on %s", cfg.precision, self.accelerator.device)
        torch.manual_seed(cfg.seed)  # the latent array and LoRA A matrices start the same
        self.embedder: Embedder = build_embedder(cfg.embedder, device=self.accelerator.device)
        self.model = self.accelerator.prepare_model(self.embedder)
        # before step 1: GradCache where a micro-batch would not fit, or a refusal naming flags
        self.cfg = fit_to_device(cfg, self.embedder, self.accelerator.device)
        self.loss_fn = InfoNCELoss(cfg.loss.temperature, cfg.loss.mask_same_text)

    # ----- one stage -------------------------------------------------------------------

    def run_stage(self, stage: int) -> StageResult:
        stage_cfg = self.cfg.stage_config(stage)
        started = time.perf_counter()
        optimizer = torch.optim.AdamW(
            self._trainable(),
            lr=stage_cfg.learning_rate,
            weight_decay=stage_cfg.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(stage_cfg))
        optimizer = self.accelerator.prepare_optimizer(optimizer)
        start_step = self._restore(stage, optimizer, scheduler)
        stream = self._my_batches(stage_cfg, start_step)
        history: list[StepStats] = []
        bar = self._progress(stage, start_step, stage_cfg.max_steps)
        step = start_step
        while step < stage_cfg.max_steps:
            micro_batches = [next(stream) for _ in range(stage_cfg.grad_accum_steps)]
            clocks = _StepClocks.start()
            stats = self._optimizer_step(stage_cfg, micro_batches, optimizer)
            scheduler.step()
            step += 1
            history.append(stats)
            self._log_step(stage, step, stats, scheduler.get_last_lr()[0], clocks.stop(), bar)
            if step % self.cfg.checkpoint_every == 0 or step == stage_cfg.max_steps:
                self._save_checkpoint(stage, step, optimizer, scheduler)
        if bar is not None:
            bar.close()
        model_dir = self.out_dir / f"stage{stage}"
        if self.accelerator.is_main_process:
            save_embedder(self.embedder, model_dir)
        self.accelerator.wait_for_everyone()
        seconds = time.perf_counter() - started
        return StageResult(
            stage=stage,
            start_step=start_step,
            steps=step,
            first_loss=history[0].loss if history else None,
            last_loss=history[-1].loss if history else None,
            last_accuracy=history[-1].accuracy if history else None,
            tokens_per_second=(sum(s.num_tokens for s in history) / seconds) if history else None,
            seconds=seconds,
            model_dir=str(model_dir),
        )

    def _trainable(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of the prepared model (FSDP flattens them when it wraps)."""
        return [param for param in self.model.parameters() if param.requires_grad]

    def _my_batches(self, stage_cfg: StageConfig, start_step: int) -> Iterator[list[TrainRow]]:
        """This process's micro-batches, after the ones consumed before `start_step`."""
        per_step = stage_cfg.grad_accum_steps * self.accelerator.num_processes
        stream = stage_batches(
            self.shards,
            stage_cfg,
            seed=self.cfg.seed * 100 + stage_cfg.stage,
            buffer=self.cfg.shuffle_buffer,
        )
        stream = itertools.islice(stream, start_step * per_step, None)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        return (batch for index, batch in enumerate(stream) if index % world == rank)

    # ----- one optimizer step ------------------------------------------------------------

    def _optimizer_step(
        self,
        stage_cfg: StageConfig,
        micro_batches: Sequence[list[TrainRow]],
        optimizer: torch.optim.Optimizer,
    ) -> StepStats:
        self.model.train()
        losses, accuracies, tokens = [], [], 0
        for index, rows in enumerate(micro_batches):
            batch = build_contrastive_batch(rows, stage_cfg.num_hard_negatives)
            last = index == len(micro_batches) - 1
            scale = 1.0 / len(micro_batches)
            if stage_cfg.cache_chunk_size is None:
                stats = self._direct_backward(batch, stage_cfg, scale, sync=last)
            else:
                stats = self._cached_backward(batch, stage_cfg, scale, sync=last)
            losses.append(stats.loss)
            accuracies.append(stats.accuracy)
            tokens += stats.num_tokens
        if stage_cfg.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self._trainable(), stage_cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return StepStats(
            loss=sum(losses) / len(losses),
            accuracy=sum(accuracies) / len(accuracies),
            num_tokens=tokens,
        )

    def _direct_backward(
        self, batch: ContrastiveBatch, stage_cfg: StageConfig, scale: float, *, sync: bool
    ) -> StepStats:
        """Embed the whole micro-batch with activations, then one backward."""
        with self._sync(sync):
            query_emb, q_tokens = self._embed(batch.queries, batch.query_instruction_chars, True)
            doc_emb, d_tokens = self._embed(batch.docs, batch.doc_instruction_chars, False)
            out = self._loss(query_emb, doc_emb, batch, stage_cfg)
            self.accelerator.backward(out.loss * scale)
        return StepStats(out.loss.item(), out.accuracy.item(), q_tokens + d_tokens)

    def _cached_backward(
        self, batch: ContrastiveBatch, stage_cfg: StageConfig, scale: float, *, sync: bool
    ) -> StepStats:
        """GradCache: embeddings without activations, loss gradient, chunk-wise backward."""
        assert stage_cfg.cache_chunk_size is not None
        size = stage_cfg.cache_chunk_size
        query_chunks = self._chunks(batch.queries, batch.query_instruction_chars, True, size)
        doc_chunks = self._chunks(batch.docs, batch.doc_instruction_chars, False, size)
        chunks = query_chunks + doc_chunks
        states, embeddings = [], []
        with torch.no_grad():
            for _, tokens in chunks:
                states.append(_RandomState.capture())
                embeddings.append(self.model(**_inputs(tokens, self.accelerator.device)))
        query_emb = _unpermute(query_chunks, embeddings[: len(query_chunks)]).requires_grad_()
        doc_emb = _unpermute(doc_chunks, embeddings[len(query_chunks) :]).requires_grad_()
        out = self._loss(query_emb, doc_emb, batch, stage_cfg)
        (out.loss * scale).backward()  # fills query_emb.grad and doc_emb.grad only
        grads = [query_emb.grad, doc_emb.grad]
        for number, ((order, tokens), state) in enumerate(zip(chunks, states, strict=True)):
            grad = grads[0 if number < len(query_chunks) else 1][order]  # (chunk, d)
            with state.replay(), self._sync(sync and number == len(chunks) - 1):
                emb = self.model(**_inputs(tokens, self.accelerator.device))
                # d(emb · grad)/dθ = grad^T dE/dθ: the chunk's share of the loss gradient
                self.accelerator.backward((emb * grad.to(emb.dtype)).sum())
        num_tokens = sum(tokens.num_tokens for _, tokens in chunks)
        return StepStats(out.loss.item(), out.accuracy.item(), num_tokens)

    def _loss(
        self,
        query_emb: torch.Tensor,
        doc_emb: torch.Tensor,
        batch: ContrastiveBatch,
        stage_cfg: StageConfig,
    ) -> LossOutput:
        device = query_emb.device
        return self.loss_fn(
            query_emb,
            doc_emb,
            batch.doc_owner.to(device),
            batch.positive_index.to(device),
            in_batch=stage_cfg.in_batch_negatives,
            doc_text_key=batch.doc_text_key.to(device),
            row_label_key=batch.row_label_key.to(device),
            extra_positive=None
            if batch.extra_positive is None
            else batch.extra_positive.to(device),
        )

    def _embed(
        self, texts: list[str], chars: list[int], is_query: bool
    ) -> tuple[torch.Tensor, int]:
        """(len(texts), d) embeddings with activations, and the number of real tokens."""
        chunks = self._chunks(texts, chars, is_query, None)
        embeddings = [self.model(**_inputs(t, self.accelerator.device)) for _, t in chunks]
        return _unpermute(chunks, embeddings), sum(t.num_tokens for _, t in chunks)

    def _chunks(
        self, texts: list[str], chars: list[int], is_query: bool, size: int | None
    ) -> list[tuple[torch.Tensor, TokenBatch]]:
        """Texts sorted longest first, cut into chunks of `size`: (positions, tokens) each."""
        max_length = (
            self.cfg.embedder.max_query_length if is_query else self.cfg.embedder.max_doc_length
        )
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        size = size or len(texts)
        chunks = []
        for start in range(0, len(order), size):
            picked = order[start : start + size]
            tokens = self.embedder.tokenize(
                [texts[i] for i in picked], [chars[i] for i in picked], max_length=max_length
            )
            chunks.append((torch.tensor(picked, dtype=torch.long), tokens))
        return chunks

    def _sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradients are all-reduced on the last backward of an optimizer step only."""
        return contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)

    # ----- logging and checkpoints -------------------------------------------------------

    def _progress(self, stage: int, start: int, total: int) -> Any:
        if not (self.cfg.progress and self.accelerator.is_main_process):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=start, desc=f"stage {stage}", unit="step")

    def _log_step(
        self, stage: int, step: int, stats: StepStats, lr: float, clocks: dict[str, float], bar: Any
    ) -> None:
        """One line of train_log.jsonl, with the step's wall and CPU seconds (see _StepClocks)."""
        if not self.accelerator.is_main_process:
            return
        record = {
            "stage": stage,
            "step": step,
            "loss": stats.loss,
            "accuracy": stats.accuracy,
            "lr": lr,
            "tokens": stats.num_tokens,
            **clocks,
        }
        with (self.out_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4f}", acc=f"{stats.accuracy:.3f}")
        if step % self.cfg.log_every == 0:
            logger.info(
                "stage %d step %d: loss %.4f, in-batch accuracy %.3f, lr %.2e",
                stage,
                step,
                stats.loss,
                stats.accuracy,
                lr,
            )

    def _save_checkpoint(
        self,
        stage: int,
        step: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        if self.accelerator.is_main_process:
            root = self.out_dir / CHECKPOINT_DIR
            final = root / f"stage{stage}-step{step:08d}"
            tmp = root / f".{final.name}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_embedder(self.embedder, tmp / "model")
            # tensors only, read back with weights_only=True; the rest is JSON (never a pickle)
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            _write_json(tmp / SCHEDULER_FILE, scheduler.state_dict())
            _write_json(tmp / RANDOM_FILE, _RandomState.capture().to_json())
            state = {"stage": stage, "step": step}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
            shutil.copyfile(self.out_dir / CONFIG_FILE, tmp / CONFIG_FILE)
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
            self._prune_checkpoints(stage)
            logger.info("checkpoint %s", final)
        self.accelerator.wait_for_everyone()

    def _prune_checkpoints(self, stage: int) -> None:
        """Keep the newest `keep_checkpoints` of the stage (a finished stage keeps its last)."""
        for old in list_checkpoints(self.out_dir, stage)[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old)

    def _restore(
        self,
        stage: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        """Resume from this stage's last checkpoint (returns its step), else start at 0.

        A stage without a checkpoint starts from the previous stage's saved model when the
        run folder has one (stage 2 starts from stage 1's weights).
        """
        checkpoint = latest_checkpoint(self.out_dir, stage)
        if checkpoint is None:
            previous = self.out_dir / f"stage{stage - 1}"
            if stage > 1 and previous.is_dir():
                load_weights(self.embedder, previous)
                logger.info("stage %d starts from %s", stage, previous)
            elif stage > 1:
                logger.warning(
                    "stage %d starts from the backbone: no stage %d model in %s",
                    stage,
                    stage - 1,
                    self.out_dir,
                )
            return 0
        load_weights(self.embedder, checkpoint / "model")
        optimizer.load_state_dict(_load_tensors(checkpoint / OPTIMIZER_FILE))
        scheduler.load_state_dict(_read_json(checkpoint / SCHEDULER_FILE))
        _RandomState.from_json(_read_json(checkpoint / RANDOM_FILE)).restore()
        step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
        logger.info("stage %d resumes at step %d from %s", stage, step, checkpoint)
        return step


def list_checkpoints(run_dir: str | Path, stage: int | None = None) -> list[Path]:
    """Complete checkpoints of the run (all stages, or one), oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (stage is None or int(match.group(1)) == stage):
            found.append(((int(match.group(1)), int(match.group(2))), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path, stage: int) -> Path | None:
    checkpoints = list_checkpoints(run_dir, stage)
    return checkpoints[-1] if checkpoints else None


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_tensors(path: Path) -> dict[str, Any]:
    """A checkpoint's tensor file, with torch's restricted unpickler: a planted pickle that
    would run code is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused to load, it holds more than tensors (a checkpoint this trainer "
            f"did not write): delete {path.parent} to resume from the one before, or use a "
            "new --out folder"
        ) from exc


def resolve_precision(cfg: TrainConfig) -> Literal["fp32", "bf16"]:
    """The precision `auto` means on this machine: bf16 autocast on GPUs and on CPUs that
    compute bf16 natively (there a MiniLM step is 1.5x faster and its losses track fp32's,
    `bench/RESULTS.md`), else fp32 (elsewhere bf16 is emulated, slower than fp32). The teacher's
    `dtype: auto` decides the same way. An explicit `fp32` or `bf16` is kept."""
    if cfg.precision != "auto":
        return cfg.precision
    use_gpu = cfg.device != "cpu" and torch.cuda.is_available()
    return "bf16" if use_gpu or cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class _StepClocks:
    """Wall and process CPU time of one optimizer step (embedding, backward, optimizer; no
    loading or checkpoints). CPU seconds compare steps fairly on a shared machine, where other
    jobs stretch the wall time but not the work done."""

    wall: float
    cpu: float

    @classmethod
    def start(cls) -> _StepClocks:
        return cls(time.perf_counter(), time.process_time())

    def stop(self) -> dict[str, float]:
        return {
            "seconds": round(time.perf_counter() - self.wall, 3),
            "cpu_seconds": round(time.process_time() - self.cpu, 3),
        }


def _schedule(cfg: StageConfig) -> Any:
    """Linear warmup, then linear decay to zero at max_steps (or constant)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        remaining = cfg.max_steps - step
        return max(0.0, remaining / max(1, cfg.max_steps - cfg.warmup_steps))

    return factor


def _inputs(tokens: TokenBatch, device: torch.device) -> dict[str, torch.Tensor]:
    tokens = tokens.to(device)
    return {
        "input_ids": tokens.input_ids,
        "attention_mask": tokens.attention_mask,
        "pool_mask": tokens.pool_mask,
    }


def _unpermute(
    chunks: list[tuple[torch.Tensor, TokenBatch]], embeddings: list[torch.Tensor]
) -> torch.Tensor:
    """Chunk embeddings (in sorted order) back to input order: (num_texts, d)."""
    order = torch.cat([positions for positions, _ in chunks]).to(embeddings[0].device)
    stacked = torch.cat(embeddings)
    out = torch.empty_like(stacked)
    out[order] = stacked
    return out


class _RandomState:
    """CPU and CUDA generator states, to replay a chunk's dropout in GradCache's second pass."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    @classmethod
    def capture(cls) -> _RandomState:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return cls(state)

    def to_json(self) -> dict[str, list[list[int]]]:
        """Generator states as byte lists: checkpoints keep them in JSON, not in a pickle."""
        return {
            "cpu": [self.state["cpu"].tolist()],
            "cuda": [state.tolist() for state in self.state.get("cuda", [])],
        }

    @classmethod
    def from_json(cls, payload: dict[str, list[list[int]]]) -> _RandomState:
        def as_bytes(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.uint8)

        state: dict[str, Any] = {"cpu": as_bytes(payload["cpu"][0])}
        if payload.get("cuda"):
            state["cuda"] = [as_bytes(values) for values in payload["cuda"]]
        return cls(state)

    def restore(self) -> None:
        torch.set_rng_state(self.state["cpu"])
        if "cuda" in self.state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.state["cuda"])

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with the captured state; the outer random stream is left untouched."""
        devices = list(range(torch.cuda.device_count())) if "cuda" in self.state else []
        with torch.random.fork_rng(devices=devices):
            self.restore()
            yield
