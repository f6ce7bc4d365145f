"""One model, one worker thread: a continuous-batching scheduler that decodes requests for different adapters
together, one token per step, with a KV cache; each row goes through its own adapter in the same forward
(per-row LoRA with batched matmuls, rowlora.py; PEFT's mixed-adapter forward for adapters that does not cover).

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

from tunewise.adapters import AdapterRefused, check_adapter
from tunewise.serve import kv
from tunewise.serve.registry import AdapterCache, Registry
from tunewise.serve.rowlora import RowLoRA, covers
from tunewise.serve.sampling import SamplingParams, TokenChoice, choose, make_generator

log = logging.getLogger("tunewise.serve")
BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
IDLE_ADAPTER = "_idle"  # an inert placeholder so the PeftModel never has zero adapters (PEFT cannot handle that)


@dataclass(frozen=True)
class Delta:
    """New text of one streamed row (never taken back), its tokens, and the finish reason on the last one."""

    text: str
    tokens: list[TokenChoice]
    offsets: list[int]  # each token's start in the completion text
    finish_reason: str | None = None


@dataclass
class GenJob:
    adapter: str | None  # None = the base
    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    on_delta: Callable[[Delta], None] | None = None  # streaming: called on the worker thread at each step
    cancelled: threading.Event = field(default_factory=threading.Event)  # the client went away
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class GenResult:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    tokens: tuple[TokenChoice, ...] = ()  # the tokens of `text` (with logprobs when asked)
    offsets: tuple[int, ...] = ()  # each token's start in `text`


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


def stop_cut(text: str, stops: list[str]) -> int | None:
    """Where the first stop string starts in `text`, or None."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return cut if cut >= 0 else None


def safe_length(text: str, stops: list[str]) -> int:
    """How much of a growing text can be streamed now: not a trailing partial character (U+FFFD from a
    half-decoded byte sequence) and not a tail that could still become a stop string."""
    n = len(text.rstrip("\ufffd"))
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, n), 0, -1):
            if text[:n].endswith(s[:k]):
                hold = max(hold, k)
                break
    return n - hold


# ------------------------------------------------------------------------------------------ a running row


class _Row:
    """One request in the running batch: its tokens so far, and what of its text has been streamed."""

    def __init__(self, job: GenJob):
        self.job = job
        self.gen = make_generator(job.sampling, "cpu")
        self.name = job.adapter if job.adapter is not None else BASE_ROW
        self.ids: list[int] = []
        self.choices: list[TokenChoice] = []
        self.offsets: list[int] = []
        self.text = ""
        self.sent_chars = 0
        self.sent_tokens = 0
        self.finish: str | None = None
        self.cut = False  # a stop string cut the text

    @property
    def last(self) -> int:
        return self.ids[-1]

    def add(self, c: TokenChoice, eos_ids: set[int], decode: Callable[[list[int]], str]) -> None:
        """Take the step's token; set `finish` on EOS, a stop string or max_new_tokens."""
        if c.token in eos_ids:
            self.finish = "stop"
            return
        self.ids.append(c.token)
        self.choices.append(c)
        self.offsets.append(len(self.text))
        self.text = decode(self.ids)
        cut = stop_cut(self.text, self.job.stop)
        if cut is not None:
            self.text, self.finish, self.cut = self.text[:cut], "stop", True
        elif len(self.ids) >= self.job.max_new_tokens:
            self.finish = "length"

    def kept_tokens(self, upto: int) -> int:
        """Tokens of the answer up to character `upto`: all of them once finished without a stop cut, else
        those that start before `upto` (a token past a stop string is not part of the answer)."""
        if self.finish and not self.cut:
            return len(self.ids)
        return sum(1 for o in self.offsets if o < upto)

    def delta(self) -> Delta | None:
        """What is new to stream since the last delta (None if nothing)."""
        upto = len(self.text) if self.finish else safe_length(self.text, self.job.stop)
        n_tok = self.kept_tokens(upto)
        if upto <= self.sent_chars and n_tok <= self.sent_tokens and not self.finish:
            return None
        d = Delta(self.text[self.sent_chars:upto], self.choices[self.sent_tokens:n_tok],
                  self.offsets[self.sent_tokens:n_tok], self.finish)
        self.sent_chars, self.sent_tokens = max(upto, self.sent_chars), max(n_tok, self.sent_tokens)
        return d

    def result(self) -> GenResult:
        n_tok = self.kept_tokens(len(self.text))
        return GenResult(self.text, self.finish or "length", len(self.job.prompt_ids), len(self.ids),
                         self.job.adapter, tuple(self.choices[:n_tok]), tuple(self.offsets[:n_tok]))


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
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self.device = next(model.parameters()).device
        # The running batch: its rows, their KV cache and attention mask (B, T), both None when empty.
        self._rows: list[_Row] = []
        self._admitting: list[GenJob] = []
        self._kv = None
        self._mask: torch.Tensor | None = None
        # Per-row LoRA (bmm over rows) for adapters it covers; the others go through PEFT's mixed forward.
        self.rowlora = RowLoRA(model)
        self._covered: dict[str, bool] = {}
        self._adapters_version, self._stacked_version = 0, -1
        self.stats = {"batches": 0, "rows": 0, "mixed_batches": 0, "max_rows": 0, "steps": 0, "cancelled": 0,
                      "loads": 0, "evictions": 0, "row_lora_forwards": 0, "peft_mixed_forwards": 0}

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
        for r in self._rows:
            if not r.job.future.done():
                r.job.future.set_exception(e)
        self._rows, self._kv, self._mask = [], None, None

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

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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
                rows.append(_Row(j))
            except Exception as e:  # this request's settings are unusable: it fails, the batch goes on
                j.future.set_exception(e)
        if not rows:
            return
        try:
            ids, mask = left_pad([r.job.prompt_ids for r in rows], self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T): each row counts from its first token
            out = self._forward([r.job.adapter for r in rows], input_ids=ids, attention_mask=mask,
                                position_ids=positions, use_cache=True, logits_to_keep=1)
            kv.check_cache(out.past_key_values)
        except BaseException as e:
            log.exception("prefill failed")
            for r in rows:
                r.job.future.set_exception(e)
            return
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        if self._rows:
            self._mask = kv.merge(self._kv, self._mask, out.past_key_values, mask)
        else:
            self._kv, self._mask = out.past_key_values, mask
        self._rows += rows
        self._take_tokens(rows, out.logits[:, -1, :])

    def _step(self) -> None:
        """Decode one token for every running row."""
        rows = self._rows
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long, device=self.device)  # (B, 1)
        positions = self._mask.sum(dim=1, keepdim=True)  # (B, 1): the new token's position in its own row
        mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)  # (B, T + 1)
        names = [r.name for r in rows]
        out = self._forward([r.job.adapter for r in rows], input_ids=ids, attention_mask=mask,
                            position_ids=positions, cache=self._kv, use_cache=True)
        self._kv, self._mask = out.past_key_values, mask
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
        self.stats["mixed_batches"] += len(set(names)) > 1
        self._take_tokens(rows, out.logits[:, -1, :])

    def _forward(self, adapters: list[str | None], **inputs):
        """One forward in which row i goes through adapters[i] (None = the base): per-row LoRA when it covers
        every adapter in the batch, else PEFT's mixed-adapter forward."""
        used = {a for a in adapters if a is not None}
        if all(self._covered.get(a, False) for a in used):
            if self._stacked_version != self._adapters_version:
                self.rowlora.rebuild([a for a in self.cache.loaded if self._covered.get(a)])
                self._stacked_version = self._adapters_version
            self.stats["row_lora_forwards"] += bool(used)
            with self.rowlora.routing(adapters):
                return self.model(**inputs)
        self.stats["peft_mixed_forwards"] += 1
        return self.model(**inputs, adapter_names=[a if a is not None else BASE_ROW for a in adapters])

    def _take_tokens(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Choose each row's next token, stream what is new, and retire finished or abandoned rows."""
        picks = choose(logits.float().cpu(), [r.job.sampling for r in rows], [r.gen for r in rows])
        for r, c in zip(rows, picks, strict=True):
            r.add(c, self.eos_ids, self._decode)
            if r.job.on_delta is not None:
                d = r.delta()
                if d is not None:
                    try:
                        r.job.on_delta(d)
                    except Exception:  # the request's event loop is gone: treat it as a disconnect
                        r.job.cancelled.set()
        self._retire()

    def _retire(self) -> None:
        keep = []
        for i, r in enumerate(self._rows):
            if r.job.cancelled.is_set():
                self.stats["cancelled"] += 1
                if not r.job.future.done():
                    r.job.future.set_exception(RuntimeError("cancelled: the client went away"))
            elif r.finish is not None:
                r.job.future.set_result(r.result())
            else:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._kv, self._mask = [], None, None
            return
        self._mask = kv.trim(self._kv, kv.select_rows(self._kv, self._mask, keep))
        self._rows = [self._rows[i] for i in keep]

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
            self._covered[n] = covers(self.model, n)
            self._adapters_version += 1
            self.stats["loads"] += 1
        return failed

    def _evict(self, name: str) -> None:
        self.model.delete_adapter(name)
        self.cache.removed(name)
        self._covered.pop(name, None)
        self._adapters_version += 1
        self.stats["evictions"] += 1


def wrap_base(model):
    """A PeftModel around the base with an inert one-module placeholder adapter (B = 0, never routed to)."""
    from peft import LoraConfig, get_peft_model

    first = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    cfg = LoraConfig(r=1, lora_alpha=1, target_modules=[first], init_lora_weights=True)
    peft_model = get_peft_model(model, cfg, adapter_name=IDLE_ADAPTER)
    peft_model.eval()
    return peft_model
