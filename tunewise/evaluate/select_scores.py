"""The base model's view of each training record, for `data select`: how well the prompt explains the answer, and
where the prompt sits in the base's representation space.

    answer loss    mean NLL of the answer's tokens after the prompt, loss(answer | prompt)
    alone loss     mean NLL of the same tokens after only a start token, loss(answer)
    IFD            answer loss / alone loss (Li et al. 2023, "From Quantity to Quality"): near or above 1 the
                   prompt does not help predict the answer (a wrong, off-task or unrelated answer)
    embedding      the base's last hidden state mean-pooled over the prompt's tokens, unit length

Records are rendered and tokenised by the trainer's one rule (formats.encode_record), sorted by length and run in
batches of about `batch_tokens` tokens; only the answer positions are projected to the vocabulary. Scores are
cached per base fingerprint and per set of records (tunewise cache, select/), so choosing another --k reruns
nothing.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tunewise.data.formats import IGNORE, Record, encode_record, leading_special_ids
from tunewise.data.schema import Checked
from tunewise.fileio import atomic_write_bytes, cache_root
from tunewise.hf import context_length
from tunewise.models import base_fingerprint, load_base, load_config, load_tokenizer

BATCH_TOKENS = 8192
MAX_ROWS = 256


@dataclass
class Scores:
    """Per record (aligned with the records given): NaN where a record was not scored (over the context)."""

    answer_loss: np.ndarray
    alone_loss: np.ndarray
    ifd: np.ndarray
    tokens: np.ndarray  # tokens of the rendered record
    embeddings: np.ndarray  # (n, hidden) float32, unit rows (zeros where not scored)
    context: int  # the base's positions
    cached: bool = False
    seconds: dict = field(default_factory=dict)  # load, tokenise, forward: where the time went

    @property
    def over_length(self) -> np.ndarray:
        return self.tokens > self.context


@dataclass
class _Encoded:
    full: list[list[int]]  # prompt + answer, as trained
    labels: list[list[int]]
    alone: list[list[int]]  # start token + the answer's tokens


def _encode(records: list[Checked], tokenizer, where: Path) -> _Encoded:
    start = leading_special_ids(tokenizer) or [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
    enc = _Encoded([], [], [])
    for rec in records:
        ids, labels = encode_record(Record(rec.obj, rec.line), rec.shape, tokenizer, where)
        enc.full.append(ids)
        enc.labels.append(labels)
        enc.alone.append(start[:1] + [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    return enc


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches whose padded size stays under batch_tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens or len(cur) >= MAX_ROWS:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


@torch.inference_mode()
def _run(model, rows: list[list[int]], targets: list[list[bool]], pool: list[list[bool]] | None, pad: int,
         batch_tokens: int, bar) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean NLL over each row's target positions, and (with `pool`) its hidden state mean-pooled over `pool`."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = next(model.parameters()).device
    loss = np.full(len(rows), np.nan)
    emb = np.zeros((len(rows), head.weight.shape[1]), np.float32) if pool is not None else None
    for batch in _batches([len(r) for r in rows], batch_tokens):
        width = max(len(rows[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        tgt = torch.zeros((len(batch), width), dtype=torch.bool)
        for r, i in enumerate(batch):
            ids[r, : len(rows[i])] = torch.tensor(rows[i])
            tgt[r, : len(rows[i])] = torch.tensor(targets[i])
        tgt[:, 0] = False  # position 0 is never predicted
        mask = (torch.arange(width)[None, :] < torch.tensor([len(rows[i]) for i in batch])[:, None]).long()
        # right padding under causal attention: no real token sees a pad, so no mask is needed (the fast path)
        hidden = decoder(input_ids=ids.to(device)).last_hidden_state
        b, t = tgt.nonzero(as_tuple=True)  # a target at t is predicted from position t-1
        nll = torch.nn.functional.cross_entropy(head(hidden[b, t - 1]).float(), ids[b, t].to(device), reduction="none")
        sums = torch.zeros(len(batch), device=device).index_add_(0, b.to(device), nll)
        counts = tgt.sum(1).clamp_min(1).to(device)
        loss[batch] = (sums / counts).cpu().numpy()
        if emb is not None:
            _pool(hidden, mask, pool, batch, emb)
        if bar is not None:
            bar.update(len(batch))
    return loss, emb


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pool: list[list[bool]], batch: list[int], emb: np.ndarray) -> None:
    width = hidden.shape[1]
    weights = torch.zeros((len(batch), width))
    for r, i in enumerate(batch):
        weights[r, : len(pool[i])] = torch.tensor(pool[i], dtype=torch.float32)
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, mask.float())  # no prompt: the whole record
    weights = weights.to(hidden.device)
    pooled = (hidden.float() * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
    emb[batch] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


def _digest(enc: _Encoded) -> str:
    h = hashlib.sha256()
    for ids, labels in zip(enc.full, enc.labels, strict=True):
        h.update(np.asarray(ids, np.int64).tobytes() + b"|" + bytes(lab != IGNORE for lab in labels) + b"\n")
    return h.hexdigest()[:16]


def _cache_path(base: str, digest: str) -> Path:
    return cache_root() / "select" / base_fingerprint(base) / f"{digest}.npz"


def score_records(base: str, records: list[Checked], where: Path, batch_tokens: int = BATCH_TOKENS,
                  progress: bool = True) -> Scores:
    """Scores of every record under `base` (see the module docstring); cached per base fingerprint (a cached
    set loads only the tokenizer and config, not the weights)."""
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(base)
    context = int(context_length(load_config(base)) or tokenizer.model_max_length)
    t1 = time.perf_counter()
    enc = _encode(records, tokenizer, where)
    tokens = np.asarray([len(x) for x in enc.full], np.int64)
    seconds = {"tokenise": round(time.perf_counter() - t1, 3)}
    cache = _cache_path(base, _digest(enc))
    if cache.is_file():
        with np.load(cache) as z:
            return Scores(z["answer_loss"], z["alone_loss"], z["ifd"], tokens, z["embeddings"], context, True,
                          {"load": round(t1 - t0, 3), **seconds})
    model, tokenizer = load_base(base)
    model.eval()
    seconds["load"] = round(time.perf_counter() - t0 - seconds["tokenise"], 3)
    fits = [i for i in range(len(records)) if tokens[i] <= context]
    answer_loss, alone_loss, emb = _forward(model, tokenizer, enc, fits, batch_tokens, progress, seconds)
    ifd = answer_loss / np.maximum(alone_loss, 1e-6)
    buf = io.BytesIO()
    np.savez(buf, answer_loss=answer_loss, alone_loss=alone_loss, ifd=ifd, embeddings=emb)
    atomic_write_bytes(cache, buf.getvalue())
    return Scores(answer_loss, alone_loss, ifd, tokens, emb, context, False, seconds)


def _forward(model, tokenizer, enc: _Encoded, fits: list[int], batch_tokens: int, progress: bool, seconds: dict):
    n = len(enc.full)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    full = [enc.full[i] for i in fits]
    trained = [[lab != IGNORE for lab in enc.labels[i]] for i in fits]
    prompt = [[lab == IGNORE for lab in enc.labels[i]] for i in fits]
    alone = [enc.alone[i] for i in fits]
    bar = tqdm(total=2 * len(fits), desc="data select: scoring", unit="pass", disable=not progress or None)
    t0 = time.perf_counter()
    try:
        cond, emb_fit = _run(model, full, trained, prompt, pad, batch_tokens, bar)
        t1 = time.perf_counter()
        unique = list(dict.fromkeys(map(tuple, alone)))  # a label set repeats its answers: score each once
        bar.total = len(fits) + len(unique)
        solo_u, _ = _run(model, [list(u) for u in unique], [[True] * len(u) for u in unique], None, pad,
                         batch_tokens, bar)
        where = {u: i for i, u in enumerate(unique)}
        solo = solo_u[[where[tuple(x)] for x in alone]] if alone else solo_u
    finally:
        bar.close()
    seconds.update(prompted_pass=round(t1 - t0, 3), answer_alone_pass=round(time.perf_counter() - t1, 3))
    answer_loss, alone_loss = np.full(n, np.nan), np.full(n, np.nan)
    emb = np.zeros((n, emb_fit.shape[1]), np.float32)
    answer_loss[fits], alone_loss[fits], emb[fits] = cond, solo, emb_fit
    return answer_loss, alone_loss, emb
