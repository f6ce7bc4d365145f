"""The framework's guardrails, as a small state machine fed one step at a time (no I/O here).

- overfitting: smoothed train loss below 0.2 (the seed's rule of thumb; tunewise's study found it loose: it fired
  while the eval loss kept falling, and a copy-heavy task reaches it within steps -- so its words say "check");
- instability: a loss spike above k x the running median, or an exploding gradient norm;
- config warnings: more than 3 epochs (diminishing returns, can degrade), LoRA lr above 1e-4 (Anyscale: unstable).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass

from tunewise.config import RunConfig
from tunewise.defaults import ADAPTER_METHODS


@dataclass
class GuardEvent:
    step: int
    guard: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def config_warnings(cfg: RunConfig, lr: float, epochs: float) -> list[GuardEvent]:
    """Warnings from the settings alone; `epochs` is the planned number (train.epochs, or what max_steps amounts to)."""
    events = []
    if epochs > cfg.guards.max_epochs + 1e-9:
        events.append(GuardEvent(0, "epochs", f"{epochs:.3g} epochs > {cfg.guards.max_epochs:g}: returns "
                                 "diminish beyond 3 epochs and multi-epoch training on a static dataset can degrade "
                                 "the model; watch the eval loss"))
    limit = cfg.guards.lora_lr_limit
    if cfg.method in ADAPTER_METHODS and limit is not None and lr > limit:
        events.append(GuardEvent(0, "lr", f"LoRA learning rate {lr:g} > {limit:g}: 1e-4 was unstable in "
                                 "Anyscale's Llama-2 runs and 3e-5 stabilised them (smaller models take larger "
                                 "rates: the limit is 3x the size default below 1B parameters); lower it if the "
                                 "loss spikes"))
    return events


class Guards:
    """Feed `observe(step, loss, grad_norm)`; it returns the events that fired and sets `stop` / `lr_scale`."""

    def __init__(self, cfg: RunConfig, window: int = 20):
        self.g = cfg.guards
        self.recent: deque[float] = deque(maxlen=self.g.smoothing)
        self.history: deque[float] = deque(maxlen=window)
        self.lr_scale = 1.0
        self.stop = False
        self.overfit_fired = False

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "history": list(self.history), "lr_scale": self.lr_scale,
                "overfit_fired": self.overfit_fired}

    def load_state_dict(self, state: dict) -> None:
        self.recent.extend(state["recent"])
        self.history.extend(state["history"])
        self.lr_scale = state["lr_scale"]
        self.overfit_fired = state["overfit_fired"]

    @property
    def smoothed_loss(self) -> float | None:
        return sum(self.recent) / len(self.recent) if len(self.recent) == self.recent.maxlen else None

    def observe(self, step: int, loss: float, grad_norm: float | None) -> list[GuardEvent]:
        events = []
        if len(self.history) >= 5:
            median = statistics.median(self.history)
            if loss > self.g.spike_factor * median:
                events.append(GuardEvent(step, "spike", f"loss {loss:.3f} is {loss / median:.1f}x the running median "
                                         f"{median:.3f}: lower the learning rate"))
        if grad_norm is not None and math.isfinite(grad_norm) and grad_norm > self.g.grad_norm_limit:
            events.append(GuardEvent(step, "grad_norm", f"gradient norm {grad_norm:.1f} > {self.g.grad_norm_limit:g} "
                                     "(exploding gradients): lower the learning rate"))
        self.history.append(loss)
        self.recent.append(loss)
        events += self._overfit(step)
        return events

    def _overfit(self, step: int) -> list[GuardEvent]:
        smooth = self.smoothed_loss
        if smooth is None or smooth >= self.g.overfit_loss:
            return []
        action = self.g.overfit_action
        below = f"smoothed train loss {smooth:.3f} < {self.g.overfit_loss}"
        if action == "reduce_lr":
            self.lr_scale *= 0.5
            self.recent.clear()  # judge the lower lr on fresh steps
            return [GuardEvent(step, "overfit", f"{below}: learning rate halved (x{self.lr_scale:g} now)")]
        if action == "stop":
            self.stop = True
            return [GuardEvent(step, "overfit", f"{below}: stopping, as guards.overfit_action asks ({OVERFIT_WHAT})")]
        if self.overfit_fired:
            return []
        self.overfit_fired = True
        return [GuardEvent(step, "overfit", f"{below}: {OVERFIT_WHAT}; checkpoints from here on are marked")]


# What a low train loss means, in the words of what was measured (benchmarks/STUDY.md, claim 8).
OVERFIT_WHAT = ("the seed's overfitting sign, but a loose one: in tunewise's study the eval loss kept falling after "
                "it fired, and a task that copies much of its input reaches it within a few steps; check the eval "
                "loss (data.eval, train.eval_every) before you lower the lr, cut epochs or raise weight decay")
