"""Typed results that several commands share; they become JSON only where a file is written (`as_dict`).

The field order of each `as_dict` is the key order of the files tunewise has always written (summary.json,
retention.json, analysis.json), so readers of those files see the same content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class RetentionChange:
    """What fine-tuning did to one retention probe. Whether the skill got worse, by how much and whether that
    counts as dropped is decided here, once: train's flags, compare's words and the report all read it."""

    metric: str | None
    higher_is_better: bool
    before: float
    after: float
    dropped: bool

    @classmethod
    def measure(cls, before: dict[str, Any], after: dict[str, Any], max_drop: float = 0.0) -> RetentionChange:
        """From a probe's result before and after: `dropped` when the skill got worse by more than `max_drop`
        (relative; 0 = any worsening). A probe with an `abs_tolerance` (kl: drift in nats, measured from zero)
        drops when it got worse by more than that, absolutely; from another zero baseline any worsening drops."""
        x, y = float(before["score"]), float(after["score"])
        change = cls(before.get("metric"), bool(before.get("higher_is_better", True)), x, y, False)
        tolerance = float(before.get("abs_tolerance") or 0.0)
        if tolerance:
            dropped = change.worse_abs > tolerance
        else:
            dropped = change.worse_abs > 0 if change.worse_by is None else change.worse_by > max_drop
        return cls(change.metric, change.higher_is_better, x, y, dropped)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetentionChange:
        """Read back from summary.json / compare.json (as_dict's keys)."""
        return cls(d.get("metric"), bool(d.get("higher_is_better", True)), float(d["before"]), float(d["after"]),
                   bool(d.get("dropped", False)))

    @property
    def abs_change(self) -> float:
        return self.after - self.before

    @property
    def worse_abs(self) -> float:
        """The absolute change signed so that positive means worse."""
        return -self.abs_change if self.higher_is_better else self.abs_change

    @property
    def rel_change(self) -> float | None:
        """abs_change / |before|; undefined (None) from a zero baseline unless nothing changed."""
        if self.before != 0:
            return self.abs_change / abs(self.before)
        return 0.0 if self.abs_change == 0 else None

    @property
    def worse_by(self) -> float | None:
        """The relative change signed so that positive always means worse (a loss up, an accuracy down)."""
        rel = self.rel_change
        return None if rel is None else (-rel if self.higher_is_better else rel)

    def words(self) -> str | None:
        """'12% worse', 'unchanged', '+0.03 from 0' (a change from zero); words, because a sign depends on
        whether higher is better."""
        if self.worse_by is None:
            return f"{self.abs_change:+.3g} from 0"
        better = -self.worse_by
        return "unchanged" if abs(better) < 0.005 else f"{abs(better):.0%} {'better' if better > 0 else 'worse'}"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "before": self.before,
                "after": self.after, "abs_change": self.abs_change, "rel_change": self.rel_change,
                "worse_by": self.worse_by, "dropped": self.dropped}


def retention_dropped(changes: dict[str, RetentionChange]) -> list[str]:
    """The probes that dropped, in order: summary.json's retention_dropped, the same flag as each change's."""
    return [name for name, c in changes.items() if c.dropped]


class TrainSummary(BaseModel):
    """What `tunewise train` reports (summary.json). Fields that only some runs have (keep_best, retention probes,
    DDP) are left unset otherwise and then absent from the JSON, as they always were."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    method: str = Field(description="lora, qlora or full.")
    base: str = Field(description="The base as the config names it.")
    base_fingerprint: str = Field(description="Digest of the base's files (a reused run must match it).")
    status: str = Field(description="completed, interrupted, stopped_by_guard or stopped_at_step.")
    trainable_params: int = Field(description="Parameters the optimizer updated.")
    total_params: int = Field(description="Parameters of the model.")
    steps: int = Field(description="Optimizer steps taken.")
    planned_steps: int = Field(description="Optimizer steps planned.")
    epochs: float = Field(description="Planned passes over the data.")
    lr: float = Field(description="Learning rate used (given or the size default).")
    wall_time_s: float = Field(description="Seconds of the whole command, loading and probes included.")
    train_time_s: float = Field(description="Seconds spent in training steps.")
    tokens: int = Field(description="Tokens trained on.")
    tokens_per_s: float = Field(description="tokens / train_time_s.")
    peak_rss_mb: float = Field(description="Peak resident memory of the process, MiB.")
    peak_cuda_mb: float | None = Field(description="Peak CUDA memory allocated, MiB (None without CUDA).")
    final_train_loss: float | None = Field(description="Mean train loss of the last 10 steps.")
    final_eval_loss: float | None = Field(description="The last eval loss (None without data.eval).")
    eval_losses: list = Field(description="[step, eval loss] pairs.")
    train_eval_gap: float | None = Field(description="final_eval_loss - final_train_loss.")
    guard_events: list[dict[str, Any]] = Field(description="What the guards saw, in order.")
    overfit_marked: bool = Field(description="The overfit guard fired.")
    examples: dict[str, Any] = Field(description="Data statistics (used, truncated, dropped, sources).")
    output: str = Field(description="The adapter or model folder written.")
    world_size: int = Field(description="Training processes.")
    best_step: int | None = Field(None, description="train.keep_best: the step of the lowest eval loss.")
    best_eval_loss: float | None = Field(None, description="train.keep_best: the lowest eval loss.")
    retention: dict[str, dict[str, Any]] | None = Field(None, description="Per probe: RetentionChange.as_dict().")
    retention_dropped: list[str] | None = Field(None, description="The probes that dropped further than "
                                                                  "preserve.max_drop.")
    retention_failed: bool | None = Field(None, description="A probe dropped and preserve.action is fail.")
    ddp_ranks_identical: bool | None = Field(None, description="DDP: every process ended with the same weights.")
    distributed: str | None = Field(None, description="ddp or fsdp under torchrun, else None.")
    peak_rss_mb_per_rank: list[float] | None = Field(None, description="Peak resident memory of each process.")

    def as_dict(self) -> dict[str, Any]:
        """summary.json's content: the fields this run has, in the order tunewise has always written them."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSummary:
        """Read back a summary.json (keys this version does not know are kept)."""
        return cls.model_validate(data)
