"""One model, one worker thread: the server's scheduler around the generation engine's running batch
(tunewise/generate/: continuous batching with a KV cache, per-row stop, per-row LoRA and sampling), which decodes
requests for different adapters together, one token per step.

Why a single worker: PEFT adapters are modules inside the one model, so loading, evicting and decoding must
never overlap. Every operation (requests and admin load / unload / pin) is an item on one FIFO queue. At each
decoding step the worker drops rows that finished or whose client went away, admits waiting requests (their
prompts are prefilled and their KV rows merged into the running batch), and decodes one token for every row,
each row with its own adapter and its own sampling settings. An admin item is run only once the running batch
has drained, and nothing queued after it joins before it runs, so a request submitted before an unload is
answered before it, and no shared "active adapter" state can leak between rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model

from tunewise.adapters import AdapterRefused, check_adapter
from tunewise.generate.batch import STAT_KEYS, AdapterRouter, RunningBatch
from tunewise.generate.rows import BASE_ROW, Delta, GenJob, GenResult, Row, left_pad, safe_length, stop_cut
from tunewise.models import attach_adapter
from tunewise.serve.registry import AdapterCache, Registry

# The job and result types and the stop helpers live in the engine; serve's routes and tests import them here.
__all__ = ["BASE_ROW", "Delta", "Engine", "GenJob", "GenResult", "left_pad", "safe_length", "stop_cut", "wrap_base"]
log = logging.getLogger("tunewise.serve")
IDLE_ADAPTER = "_idle"  # an inert placeholder so the PeftModel never has zero adapters (PEFT cannot handle that)


@dataclass
class _Control:
    fn: Callable[[], object]
    future: Future = field(default_factory=Future)


# ---------------------------------------------------------------------------------------------- engine


class Engine:
    """Owns the PeftModel; runs the decoding loop and adapter loads/unloads on one worker thread."""

    def __init__(self, model, tokenizer, registry: Registry, max_loaded: int = 8, max_batch: int = 16,
                 batch_wait_s: float = 0.005):
        self.model, self.tokenizer, self.registry = model, tokenizer, registry
        self.cache = AdapterCache(max_loaded)
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self._q: queue.Queue = queue.Queue()
        self._pending: list = []  # items taken off the queue but not yet admitted / run, in order
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {**dict.fromkeys(STAT_KEYS, 0), "loads": 0, "evictions": 0}
        # Per-row LoRA (bmm over rows) for adapters it covers; the others go through PEFT's mixed forward.
        self.router = AdapterRouter(model, self.stats)
        self.batch = RunningBatch(model, tokenizer, self.router, self.stats, merge=True)
        self.eos_ids = self.batch.eos_ids  # the tokens that end a row (routes and tests read them here)
        self._admitting: list[GenJob] = []

    @property
    def _rows(self) -> list[Row]:
        return self.batch.rows

    # -- public, thread-safe -------------------------------------------------------------------------
    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._run, name="tunewise-serve-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        """Rows in the running batch now (read from any thread; a snapshot)."""
        return len(self._rows)

    def submit(self, job: GenJob) -> Future:
        self._q.put(job)
        return job.future

    def call(self, fn: Callable[[], object]) -> Future:
        """Run fn on the worker once the running batch has drained (serialised with decoding)."""
        c = _Control(fn)
        self._q.put(c)
        return c.future

    def load(self, name: str, pin: bool | None = None) -> Future:
        def do() -> dict:
            self._ensure([name])
            if pin is not None:
                self.cache.pin(name, pin)
            return self.describe()
        return self.call(do)

    def unload(self, name: str) -> Future:
        def do() -> dict:
            if name in self.cache:
                self._evict(name)
            return self.describe()
        return self.call(do)

    def pin(self, name: str, on: bool) -> Future:
        def do() -> dict:
            if on:
                self._ensure([name])
            self.cache.pin(name, on)
            return self.describe()
        return self.call(do)

    def describe(self) -> dict:
        """Loaded (least recently used first) and pinned adapters; called on the worker or for display."""
        return {"loaded": self.cache.loaded, "pinned": sorted(self.cache.pinned),
                "max_loaded": self.cache.max_loaded, "running": self.running, **self.stats}

    # -- worker ---------------------------------------------------------------------------------------
    def _take(self, timeout: float | None):
        """The next waiting item (pending first), blocking up to `timeout` (None = forever, 0 = not at all)."""
        if self._pending:
            return self._pending.pop(0)
        try:
            return self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # a bug here must fail these requests, not kill the only worker
                log.exception("decoding step failed")
                self._fail_running(e)
                for j in self._admitting:  # taken off the queue this round but not yet in the batch
                    if not j.future.done():
                        if j.future.running() or j.future.set_running_or_notify_cancel():
                            j.future.set_exception(e)
            self._admitting = []
        self._fail_running(RuntimeError("the server is shutting down"))
        self._fail_remaining()

    def _tick(self) -> None:
        """One scheduling round: admit what may join, run an admin item once drained, decode one step."""
        admitted: list[GenJob] = []
        first_wait = None if not self._rows else 0.0  # idle: block until something arrives
        deadline = None
        while len(self._rows) + len(admitted) < self.max_batch:
            if deadline is None:
                item = self._take(first_wait)
            else:
                item = self._take(max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            if isinstance(item, _Control):
                if self._rows or admitted:
                    self._pending.insert(0, item)  # runs once the batch drains; nothing queued after it joins
                    break
                self._run_control(item)
                return
            if self._skip_cancelled(item):
                continue
            if not self._fits(item, admitted):
                self._pending.insert(0, item)  # waits (first in line) until a running adapter frees a slot
                break
            admitted.append(item)
            if deadline is None and not self._rows:  # an idle engine waits briefly so a burst shares a prefill
                deadline = time.monotonic() + self.batch_wait_s
            first_wait = 0.0
        if admitted:
            self._admitting = admitted
            self._admit(admitted)
        if self._rows:
            self._step()

    def _skip_cancelled(self, job: GenJob) -> bool:
        if job.future.done() or job.cancelled.is_set():
            if not job.future.done() and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("cancelled: the client went away"))
            self.stats["cancelled"] += 1
            return True
        return False

    def _running_adapters(self, extra: list[GenJob] = ()) -> list[str]:
        names = [r.job.adapter for r in self._rows] + [j.adapter for j in extra]
        return list(dict.fromkeys(n for n in names if n is not None))

    def _fits(self, job: GenJob, admitted: list[GenJob]) -> bool:
        """Can `job`'s adapter be resident alongside every adapter the running batch and this round use?"""
        if job.adapter is None:
            return True
        needed = self._running_adapters(admitted)
        if job.adapter in needed:
            return True
        return job.adapter in self.cache.capacity_for(needed + [job.adapter])

    def _fail_running(self, e: BaseException) -> None:
        self.batch.fail(e)

    def _fail_remaining(self) -> None:
        """On shutdown, jobs still queued get an error instead of waiting forever."""
        leftovers = list(self._pending)
        self._pending.clear()
        while True:
            try:
                leftovers.append(self._q.get_nowait())
            except queue.Empty:
                break
        for item in leftovers:
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(RuntimeError("the server is shutting down"))

    def _run_control(self, c: _Control) -> None:
        if c.future.set_running_or_notify_cancel():
            try:
                c.future.set_result(c.fn())
            except BaseException as e:  # delivered to the caller, the worker keeps going
                c.future.set_exception(e)

    def _admit(self, jobs: list[GenJob]) -> None:
        """Load the adapters `jobs` need, prefill their prompts, take each one's first token, join the batch."""
        try:
            failed = self._ensure(self._running_adapters(jobs), soft=True)
        except AdapterRefused as e:  # no room after all (pins changed): these jobs fail, the batch goes on
            failed = {j.adapter: e for j in jobs}
        rows = []
        for j in jobs:
            if not j.future.set_running_or_notify_cancel():
                continue
            if j.adapter in failed:
                j.future.set_exception(failed[j.adapter])
                continue
            try:
                rows.append(Row(j))
            except Exception as e:  # this request's settings are unusable: it fails, the batch goes on
                j.future.set_exception(e)
        if not rows:
            return
        try:
            prefilled = self.batch.prefill(rows)
        except BaseException as e:
            log.exception("prefill failed")
            for r in rows:
                r.job.future.set_exception(e)
            return
        self.batch.join(rows, prefilled)

    def _step(self) -> None:
        """Decode one token for every running row."""
        self.batch.step()

    # -- adapters (worker thread only) -----------------------------------------------------------------
    def _ensure(self, names: list[str], soft: bool = False) -> dict[str, BaseException]:
        """Make `names` resident (evicting LRU, unpinned ones); with soft=True return failures per name."""
        failed: dict[str, BaseException] = {}
        for n in self.cache.plan(names):
            self._evict(n)
        for n in names:
            if n in self.cache:
                self.cache.touch(n)
                continue
            try:
                entry = self.registry.get(n)
                check_adapter(n, entry.path, self.registry.base)  # re-checked: the folder may have changed
                attach_adapter(self.model, entry.path, n)
            except AdapterRefused as e:
                if not soft:
                    raise
                failed[n] = e
                continue
            except Exception as e:  # PEFT failed on a file that passed the check: refuse this adapter only
                err = AdapterRefused(f"adapter '{n}' could not be loaded: {type(e).__name__}: {e}")
                if not soft:
                    raise err from e
                failed[n] = err
                continue
            self.cache.added(n)
            self.router.added(n)
            self.stats["loads"] += 1
        return failed

    def _evict(self, name: str) -> None:
        self.model.delete_adapter(name)
        self.cache.removed(name)
        self.router.removed(name)
        self.stats["evictions"] += 1


def wrap_base(model):
    """A PeftModel around the base with an inert one-module placeholder adapter (B = 0, never routed to)."""
    first = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    cfg = LoraConfig(r=1, lora_alpha=1, target_modules=[first], init_lora_weights=True)
    peft_model = get_peft_model(model, cfg, adapter_name=IDLE_ADAPTER)
    peft_model.eval()
    return peft_model
