"""One model, one worker thread: a micro-batcher that answers concurrent requests for different adapters in
one forward pass (PEFT mixed-adapter batches via `adapter_names`).

Why a single worker: PEFT adapters are modules inside the one model, so loading, evicting and generating must
never overlap. Every operation (generation batches and admin load / unload / pin) is a job on one FIFO queue
and runs on the worker thread, in order. A batch is collected for at most `batch_wait_s` after its first job,
and never across an admin job, so a request submitted before an unload is answered before it, and each row
carries its own adapter name into the forward (no shared "active adapter" state that could leak between rows).
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

from tunewise.serve.registry import AdapterCache, AdapterRefused, Registry, check_adapter

log = logging.getLogger("tunewise.serve")
BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
IDLE_ADAPTER = "_idle"  # an inert placeholder so the PeftModel never has zero adapters (PEFT cannot handle that)


@dataclass
class GenJob:
    adapter: str | None  # None = the base
    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class GenResult:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None


@dataclass
class _Control:
    fn: Callable[[], object]
    future: Future = field(default_factory=Future)


# ------------------------------------------------------------------------------------------ pure helpers


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest), padded on the left for generation."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def finish_row(new_ids: list[int], max_new: int, eos_ids: set[int], stop: list[str],
               decode: Callable[[list[int]], str]) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens) for one row's generated ids, cut at EOS, max_new or a stop."""
    ids = new_ids[:max_new]
    reason = "length"
    for i, t in enumerate(ids):
        if t in eos_ids:
            ids, reason = ids[:i], "stop"
            break
    text = decode(ids)
    if stop:
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
    return text, reason, len(ids)


# ---------------------------------------------------------------------------------------------- engine


class Engine:
    """Owns the PeftModel; runs generation batches and adapter loads/unloads on one worker thread."""

    def __init__(self, model, tokenizer, registry: Registry, max_loaded: int = 8, max_batch: int = 16,
                 batch_wait_s: float = 0.005):
        self.model, self.tokenizer, self.registry = model, tokenizer, registry
        self.cache = AdapterCache(max_loaded)
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self._q: queue.Queue = queue.Queue()
        self._pending: list = []  # jobs taken off the queue but not yet run (the batch was full)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self.device = next(model.parameters()).device
        self.stats = {"batches": 0, "rows": 0, "mixed_batches": 0, "max_rows": 0, "loads": 0, "evictions": 0}

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

    def submit(self, job: GenJob) -> Future:
        self._q.put(job)
        return job.future

    def call(self, fn: Callable[[], object]) -> Future:
        """Run fn on the worker, between batches (serialised with generation)."""
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
                "max_loaded": self.cache.max_loaded, **self.stats}

    # -- worker ---------------------------------------------------------------------------------------
    def _next(self, timeout: float | None):
        if self._pending:
            return self._pending.pop(0)
        try:
            return self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            item = self._next(None)
            if item is None:
                continue
            if isinstance(item, _Control):
                self._run_control(item)
                continue
            batch = [item]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                nxt = self._next(deadline - time.monotonic())
                if nxt is None:
                    break
                if not isinstance(nxt, GenJob):
                    self._pending.insert(0, nxt)  # an admin job or stop: it runs after this batch, in order
                    break
                batch.append(nxt)
            try:
                self._run_batch(batch)
            except Exception as e:  # a bug here must fail these requests, not kill the only worker
                log.exception("batch failed")
                for j in batch:
                    if not j.future.done():
                        if j.future.running() or j.future.set_running_or_notify_cancel():
                            j.future.set_exception(e)
        self._fail_remaining()

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

    def _run_batch(self, batch: list[GenJob]) -> None:
        batch = [j for j in batch if not j.future.done()]  # cancelled: the client went away
        if not batch:
            return
        # Adapters this batch needs, in order of first appearance; jobs whose adapter does not fit in memory
        # alongside the others wait for the next round (their order is kept).
        needed = list(dict.fromkeys(j.adapter for j in batch if j.adapter is not None))
        fitted = set(self.cache.capacity_for(needed))
        later = [j for j in batch if j.adapter is not None and j.adapter not in fitted]
        batch = [j for j in batch if j.adapter is None or j.adapter in fitted]
        self._pending[:0] = later
        failed = self._ensure([n for n in needed if n in fitted], soft=True)
        runnable = []
        for j in batch:  # jobs deferred above stay PENDING: they are marked running only when they run
            if not j.future.set_running_or_notify_cancel():
                continue
            if j.adapter in failed:
                j.future.set_exception(failed[j.adapter])
            else:
                runnable.append(j)
        if not runnable:
            return
        try:
            results = self._generate(runnable)
        except BaseException as e:
            log.exception("generation failed")
            for j in runnable:
                j.future.set_exception(e)
            return
        for j, r in zip(runnable, results, strict=True):
            j.future.set_result(r)

    def _generate(self, jobs: list[GenJob]) -> list[GenResult]:
        ids, mask = left_pad([j.prompt_ids for j in jobs], self.pad_id)
        names = [j.adapter if j.adapter is not None else BASE_ROW for j in jobs]
        max_new = max(j.max_new_tokens for j in jobs)
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=max_new, do_sample=False, adapter_names=names,
                                  pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids))
        new = out[:, ids.shape[1]:].tolist()  # (B, generated)
        self.stats["batches"] += 1
        self.stats["rows"] += len(jobs)
        self.stats["max_rows"] = max(self.stats["max_rows"], len(jobs))
        self.stats["mixed_batches"] += len(set(names)) > 1
        results = []
        for j, row in zip(jobs, new, strict=True):
            text, reason, n = finish_row(row, j.max_new_tokens, self.eos_ids, j.stop,
                                         lambda t: self.tokenizer.decode(t, skip_special_tokens=True))
            results.append(GenResult(text, reason, len(j.prompt_ids), n, j.adapter))
        return results

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
                self.model.load_adapter(str(entry.path), adapter_name=n, is_trainable=False)
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
            self.stats["loads"] += 1
        return failed

    def _evict(self, name: str) -> None:
        self.model.delete_adapter(name)
        self.cache.removed(name)
        self.stats["evictions"] += 1


def wrap_base(model):
    """A PeftModel around the base with an inert one-module placeholder adapter (B = 0, never routed to)."""
    from peft import LoraConfig, get_peft_model

    first = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    cfg = LoraConfig(r=1, lora_alpha=1, target_modules=[first], init_lora_weights=True)
    peft_model = get_peft_model(model, cfg, adapter_name=IDLE_ADAPTER)
    peft_model.eval()
    return peft_model
