"""One training loop for LoRA, QLoRA and full fine-tuning; the differences live in methods.py.

The loss of an optimizer step is the sum of per-token cross-entropies over the whole global batch divided by the
number of target tokens in it, so gradient accumulation and DDP (which averages gradients over ranks) give the same
update as one process with the same global batch.

bitsandbytes is imported only for the adamw8bit optimizer; a failure to load it is one error naming train.optimizer.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tunewise.config import RunConfig
from tunewise.data.formats import IGNORE, Example
from tunewise.errors import TunewiseError
from tunewise.fileio import append_jsonl, atomic_write_text
from tunewise.rundir import RunDir
from tunewise.train import distributed, fsdp
from tunewise.train.batches import collate, epoch_batches, shard_rows, target_count
from tunewise.train.best import BestKeeper
from tunewise.train.checkpoint import (
    TrainState,
    complete_checkpoints,
    load_checkpoint,
    save_checkpoint,
    usable_checkpoint,
)
from tunewise.train.cross_entropy import summed_cross_entropy, summed_projected_cross_entropy
from tunewise.train.guards import GuardEvent, Guards
from tunewise.train.methods import Method
from tunewise.train.packing import forward_inputs
from tunewise.train.trackers import Trackers

EXIT_NONFINITE = 3


class NonFiniteLoss(TunewiseError):
    exit_code = EXIT_NONFINITE


def lr_factor(step: int, total: int, warmup_ratio: float, kind: str) -> float:
    """Warm-up then cosine / linear decay to 0, or constant; a pure function of the step (exact resume)."""
    warmup = int(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1 - progress)


def summed_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], classification: bool) -> torch.Tensor:
    """Sum (not mean) of the cross-entropy terms of a micro-batch; the caller divides by the global count."""
    inputs = forward_inputs(model, batch, causal_lm=not classification)  # packed or right-padded (packing.py)
    if classification:
        return F.cross_entropy(model(**inputs).logits.float(), batch["labels"], reduction="sum")
    # Position p predicts token p+1, so p needs a logit only when token p+1 is a target.
    targets = batch["labels"][:, 1:]
    if _projects_selected_positions(model):
        # Only the target positions go through the output projection and the cross-entropy: with a 49k vocabulary
        # that projection is ~20% of a small model's FLOPs, and completion-only loss needs no logits on prompts.
        keep = F.pad(targets != IGNORE, (0, 1), value=False)  # (batch, seq) bool
        head = _plain_output_projection(model) if torch.is_grad_enabled() else None
        if head is not None:  # the projection and the loss together, chunk by chunk: the logits never all exist
            with _head_returns_loss(head, targets[keep[:, :-1]]):
                return model(**inputs, logits_to_keep=keep).logits
        logits = model(**inputs, logits_to_keep=keep).logits
        return summed_cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets[keep[:, :-1]])
    logits = model(**inputs).logits
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])  # (batch*(seq-1), vocab)
    return summed_cross_entropy(shift_logits, targets.reshape(-1), ignore_index=IGNORE)


def _plain_output_projection(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The causal LM's output projection when it is a bias-free nn.Linear (not wrapped by an adapter), else None."""
    cached = getattr(model, "_tunewise_plain_head", None)
    if cached is None:
        inner = _unwrap(model)
        head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        cached = (head if type(head) is torch.nn.Linear and head.bias is None else None,)
        model._tunewise_plain_head = cached  # in a tuple: a module attribute would become a submodule
    return cached[0]


@contextlib.contextmanager
def _head_returns_loss(head: torch.nn.Linear, targets: torch.Tensor):
    """For one forward, the output projection returns the summed cross-entropy at `targets` instead of logits. It
    stays the module's own call, so DDP / FSDP hooks see the weight used where they expect it."""
    head.forward = lambda hidden: summed_projected_cross_entropy(hidden, head.weight, targets)
    try:
        yield
    finally:
        del head.forward


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = distributed.unwrap(model)  # DDP
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT


def _projects_selected_positions(model: torch.nn.Module) -> bool:
    """Whether the causal LM under any DDP / PEFT wrapper takes a boolean `logits_to_keep` (transformers >= 5)."""
    cached = getattr(model, "_tunewise_keeps_logits", None)
    if cached is None:
        cached = "logits_to_keep" in inspect.signature(_unwrap(model).forward).parameters
        model._tunewise_keeps_logits = cached
    return cached


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@dataclass
class Plan:
    steps_per_epoch: int
    total_steps: int
    epochs: float


def make_plan(n_examples: int, cfg: RunConfig) -> Plan:
    batches = math.ceil(n_examples / cfg.train.batch_size)
    per_epoch = max(1, math.ceil(batches / cfg.train.grad_accum))
    total = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * per_epoch))
    return Plan(per_epoch, total, total / per_epoch)


@dataclass
class LoopResult:
    status: str  # "completed" | "stopped_by_guard" | "interrupted" | "stopped_at_step"
    events: list[GuardEvent] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0


class Loop:
    """Runs the optimizer steps; owns the state that a checkpoint must capture."""

    def __init__(self, cfg: RunConfig, method: Method, model: torch.nn.Module, train_set: list[Example],
                 eval_set: list[Example] | None, run_dir: Path, ctx: distributed.DistContext, pad_id: int,
                 quiet: bool = False):
        self.cfg, self.method, self.model, self.ctx = cfg, method, model, ctx
        self.train_set, self.eval_set, self.run_dir, self.pad_id, self.quiet = train_set, eval_set, run_dir, pad_id, quiet
        self.classification = cfg.task_type == "sequence-classification"
        self.device = next(model.parameters()).device
        self.plan = make_plan(len(train_set), cfg)
        self.lengths = [len(e.input_ids) for e in train_set]
        self.groups = method.param_groups(model, cfg, cfg.lr)
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = make_optimizer(self.groups, cfg)
        self.state = TrainState()
        self.guards = Guards(cfg)
        self.signal_received: str | None = None
        self.metrics_path = RunDir(run_dir).metrics_path
        self.trackers = Trackers()  # run.py opens the ones train.report_to asks for
        self.best = BestKeeper(RunDir(run_dir).best_dir) if cfg.train.keep_best else None
        self.sharded = fsdp.is_sharded(model)  # every rank takes part in saves, evals and the final gather

    # -------------------------------------------------------------------------------- checkpoints

    def resume(self) -> None:
        ckpt = distributed.from_main(self.ctx, lambda: usable_checkpoint(RunDir(self.run_dir).checkpoints))
        complete = complete_checkpoints(RunDir(self.run_dir).checkpoints)
        if ckpt is None and complete:
            raise TunewiseError(f"{complete[-1]}: the checkpoint is damaged (its files do not match the sha256 "
                                "recorded when it was saved) and no intact earlier checkpoint is kept",
                                "start the run again with --out (train.keep_last >= 2 keeps one to fall back to)")
        if ckpt is None:
            raise TunewiseError(f"{self.run_dir}: no complete checkpoint to resume from",
                                "start a new run, or check that checkpoints/step-* holds a COMPLETE marker")
        try:
            if self.sharded:
                self.state, extra = fsdp.load(ckpt, self.model, self.optimizer, self.ctx)
            else:
                fsdp.check_layout(ckpt, sharded=False, world=self.ctx.world)
                self.state, trainable, extra = load_checkpoint(ckpt, self.optimizer)
                self.method.load_trainable_state(self.model, trainable)
            self.guards.load_state_dict(extra["guards"])
        except TunewiseError:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure to read it means the files are damaged
            earlier = complete_checkpoints(RunDir(self.run_dir).checkpoints)[:-1]
            fallback = (f"move {ckpt.name} away to resume from {earlier[-1].name}" if earlier else
                        "no earlier checkpoint is kept; start the run again with --out")
            raise TunewiseError(f"{ckpt}: the checkpoint is damaged and cannot be loaded "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
                                fallback) from None
        if self.ctx.is_main:
            _truncate_metrics(self.metrics_path, self.state.step)
        if self.best is not None:
            self.best.load()

    def save(self, reason: str) -> Path | None:
        extra = {"guards": self.guards.state_dict(), "reason": reason,
                 "overfit_marked": self.guards.overfit_fired}
        keep, root = self.cfg.train.keep_last, RunDir(self.run_dir).checkpoints
        if self.sharded:
            if self.ctx.all_sum(float(sum(not torch.isfinite(fsdp.local(p)).all() for p in self.params))):
                raise NonFiniteLoss("refusing to checkpoint non-finite weights", "lower the learning rate")
            return fsdp.save(root, self.state, self.model, self.optimizer, extra, self.ctx, keep)
        if not self.ctx.is_main:
            return None
        trainable = self.method.trainable_state(distributed.unwrap(self.model))
        if not all(torch.isfinite(t).all() for t in trainable.values()):
            raise NonFiniteLoss("refusing to checkpoint non-finite weights", "lower the learning rate")
        return save_checkpoint(root, self.state, trainable, self.optimizer, extra, keep)

    # -------------------------------------------------------------------------------- the loop

    def _global_batches(self):
        """(epoch, index, rows) from the current data position onwards, forever (the plan decides when to stop)."""
        epoch, start = self.state.epoch, self.state.batch_in_epoch
        while True:
            batches = epoch_batches(self.lengths, self.cfg.train.batch_size, self.cfg.train.seed, epoch,
                                    self.cfg.data.group_by_length)
            for i in range(start, len(batches)):
                yield epoch, i, batches[i]
            epoch, start = epoch + 1, 0

    def _set_lr(self) -> float:
        t = self.cfg.train
        factor = lr_factor(self.state.step, self.plan.total_steps, t.warmup_ratio, t.scheduler) * self.guards.lr_scale
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def _step(self, micro: list[list[int]]) -> tuple[float, float | None, int]:
        """One optimizer step over `grad_accum` global batches: (loss, grad norm before clipping, tokens)."""
        examples = [[self.train_set[i] for i in rows] for rows in micro]
        norm = target_count([e for ex in examples for e in ex], self.classification)
        local_sum, tokens = 0.0, 0
        for k, rows in enumerate(micro):
            mine = [self.train_set[i] for i in shard_rows(rows, self.ctx.rank, self.ctx.world)]
            # a rank left without rows by a short last batch still joins DDP's / FSDP's collectives: zero weight
            weight = 1.0 if mine else 0.0
            mine = mine or [self.train_set[rows[0]]]
            batch = {n: t.to(self.device) for n, t in collate(mine, self.pad_id, self.classification).items()}
            sync = k == len(micro) - 1 or not self.ctx.enabled
            # FSDP reduce-scatters every micro-batch into sharded gradients (no unsharded accumulation)
            ctx = self.model.no_sync() if not sync and not self.sharded else contextlib.nullcontext()
            with ctx:
                loss_sum = summed_loss(self.model, batch, self.classification)
                (loss_sum * (weight * self.ctx.world / norm)).backward()
            local_sum += weight * float(loss_sum.detach())
            tokens += int(weight) * sum(len(e.input_ids) for e in mine)
        loss = self.ctx.all_sum(local_sum) / norm
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"loss became {loss} at step {self.state.step + 1}; the run stopped before updating "
                                "the weights and nothing non-finite was written", "lower train.lr or check the data")
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, int(self.ctx.all_sum(tokens))

    def _clip(self) -> float | None:
        limit = self.cfg.train.max_grad_norm
        grads = [p for p in self.params if p.grad is not None]
        total = torch.nn.utils.clip_grad_norm_(grads, limit if limit else float("inf"))
        value = float(fsdp.full_value(total))
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"gradient norm became {value} at step {self.state.step + 1}; weights were not "
                                "updated", "lower train.lr or enable gradient clipping (train.max_grad_norm)")
        return value

    def run(self, stop_at_step: int | None = None) -> LoopResult:
        result = LoopResult(status="completed")
        self._install_signal_handlers()
        bar = self._progress()
        batches = self._global_batches()
        t0 = time.time()
        self.model.train()
        while self.state.step < self.plan.total_steps:
            micro = []
            for _ in range(self.cfg.train.grad_accum):
                epoch, index, rows = next(batches)
                if epoch != self.state.epoch:
                    self._end_epoch(result)
                    self.state.epoch = epoch
                micro.append(rows)
                self.state.batch_in_epoch = index + 1
            lr = self._set_lr()
            loss, grad_norm, tokens = self._step(micro)
            self.state.step += 1
            self.state.tokens += tokens
            result.train_losses.append(loss)
            events = self.guards.observe(self.state.step, loss, grad_norm)
            result.events += events
            self._log(loss, lr, grad_norm, tokens, time.time() - t0, events, bar)
            if self.cfg.train.eval_every and self.state.step % self.cfg.train.eval_every == 0:
                self._evaluate(result, round(self.state.step / self.plan.steps_per_epoch, 4))
            if self.cfg.train.save_every and self.state.step % self.cfg.train.save_every == 0:
                self.save("periodic")
            if self.guards.stop or self.signal_received or self.state.step == stop_at_step:
                result.status = ("stopped_by_guard" if self.guards.stop else
                                 "interrupted" if self.signal_received else "stopped_at_step")
                self.save(result.status)
                break
        if result.status == "completed":
            self._end_epoch(result)
        if bar is not None:
            bar.close()
        result.train_seconds = time.time() - t0
        return result

    def _end_epoch(self, result: LoopResult) -> None:
        every = self.cfg.train.eval_every
        if not (every and self.state.step % every == 0):  # eval_every took this step's eval (maybe before a resume)
            self._evaluate(result, self.state.epoch + 1)

    def _evaluate(self, result: LoopResult, epoch: float) -> None:
        if not self.eval_set or not (self.ctx.is_main or self.sharded):  # sharded: all ranks run the forward passes
            return
        model = distributed.unwrap(self.model)
        loss = eval_loss(model, self.eval_set, self.pad_id, self.classification, self.cfg.train.batch_size)
        result.eval_losses.append((self.state.step, loss))
        if self.ctx.is_main:
            record = {"step": self.state.step, "epoch": epoch, "eval_loss": loss}
            append_jsonl(self.metrics_path, record)
            self.trackers.log(record)
            if self.best is not None:  # config refuses keep_best with fsdp: these are whole tensors
                self.best.observe(self.state.step, loss, lambda: self.method.trainable_state(model))
        self.model.train()

    def _log(self, loss, lr, grad_norm, tokens, elapsed, events, bar) -> None:
        if not self.ctx.is_main:
            return
        tps = self.state.tokens / max(elapsed, 1e-9)
        record = {"step": self.state.step, "epoch": round(self.state.step / self.plan.steps_per_epoch, 4),
                  "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "tokens_per_s": round(tps, 1),
                  "rss_mb": round(peak_rss_mb(), 1)}
        if torch.cuda.is_available():
            record["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        for e in events:
            record.setdefault("events", []).append(e.as_dict())
            _say(f"[guard:{e.guard}] step {e.step}: {e.message}", self.quiet)
        if self.state.step % self.cfg.train.log_every == 0 or events:
            append_jsonl(self.metrics_path, record)
            self.trackers.log(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}", refresh=False)

    def _progress(self):
        if not self.ctx.is_main or self.quiet:
            return None
        return tqdm(total=self.plan.total_steps, initial=self.state.step, desc=f"train {self.cfg.method}",
                    unit="step", dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def _install_signal_handlers(self) -> None:
        """SIGTERM / Ctrl-C: finish the step, save a checkpoint, exit cleanly."""
        def handler(signum, _frame):
            self.signal_received = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. called from a server); leave signals alone
                pass


@torch.no_grad()
def eval_loss(model: torch.nn.Module, examples: list[Example], pad_id: int, classification: bool,
              batch_size: int) -> float:
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for s in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[s: s + batch_size]]
        batch = {n: t.to(device) for n, t in collate(chunk, pad_id, classification).items()}
        total += float(summed_loss(model, batch, classification))
        count += target_count(chunk, classification)
    return total / max(count, 1)


def make_optimizer(groups: list[dict], cfg: RunConfig) -> torch.optim.Optimizer:
    wd = cfg.train.weight_decay
    if cfg.train.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, lr=cfg.lr, weight_decay=wd)
        except Exception as e:  # bitsandbytes' 8-bit optimizers need a supported backend
            raise TunewiseError(f"train.optimizer adamw8bit is not available here ({e})",
                                "use train.optimizer: adamw") from e
    # The fused kernel (CPU and CUDA) updates all parameters in one pass; it needs floating-point params.
    fused = all(p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=wd, fused=fused, foreach=None if fused else True)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget metrics logged after the checkpoint (they will be logged again, identically)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(message)
