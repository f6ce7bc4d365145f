"""Near-duplicate detection: word 3-gram shingles, MinHash signatures and LSH banding, all numpy-vectorised.

Pure functions on arrays; no I/O and no printing. The pipeline (Broder 1997; Leskovec et al., Mining of Massive
Datasets ch. 3):
  texts --(tokenise bytes, vectorised)--> token hashes --(3-grams)--> shingle hashes
        --(num_perm universal hashes, min per document)--> signatures (n, num_perm) uint32
        --(bands x rows)--> band keys (n, bands) uint64 --(equal keys)--> candidate pairs
        --(share of equal signature entries ~ Jaccard)--> verified pairs --> clusters
With 32 bands of 4 rows a pair with Jaccard 0.8 becomes a candidate with probability 1-(1-0.8^4)^32 > 0.9999,
and candidates are verified on the full signature, so the threshold is applied to an estimate of J (standard
error sqrt(J(1-J)/num_perm), about 0.035 at J=0.8 with 128 permutations).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

U64 = np.uint64
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)
_P = U64(0x100000001B3)  # FNV prime: odd, so it is invertible mod 2**64
_C1, _C2 = U64(0x9E3779B97F4A7C15), U64(0xC2B2AE3D27D4EB4F)
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True
_WORD = np.zeros(256, dtype=bool)
_WORD[ord("0"):ord("9") + 1] = True
_WORD[ord("a"):ord("z") + 1] = True
_WORD[ord("A"):ord("Z") + 1] = True
_WORD[128:] = True  # bytes of non-ASCII letters (UTF-8) belong to words
_WORD[ord("_")] = True

NUM_PERM = 128
BANDS = 32
NGRAM = 3


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads bits so that similar inputs get unrelated hashes (uint64 wraps)."""
    x = x ^ (x >> U64(30))
    x = x * _M1
    x = x ^ (x >> U64(27))
    x = x * _M2
    return x ^ (x >> U64(31))


def token_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lower-cased word and punctuation tokens of every text, hashed: (hashes (T,) uint64, doc index (T,) int64).

    Tokens are maximal runs of word bytes or single punctuation bytes (so '23 + 45' keeps its operator). Token
    hashes are polynomial hashes of their bytes, computed for all texts at once from prefix sums.
    """
    encoded = [t.encode("utf-8", "surrogatepass").lower() for t in texts]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)  # '\n' separators: no token spans two texts
    if buf.size == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    word, space = _WORD[buf], _SPACE[buf]
    prev_word = np.concatenate(([False], word[:-1]))
    next_word = np.concatenate((word[1:], [False]))
    punct = ~word & ~space
    starts = np.flatnonzero((word & ~prev_word) | punct)  # (T,)
    ends = np.flatnonzero((word & ~next_word) | punct) + 1  # (T,) exclusive
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(buf.size + 1, _P, dtype=U64))
        powers[1:] = powers[:-1]
        powers[0] = U64(1)  # powers[i] = P**i
        prefix = np.concatenate(([U64(0)], np.cumsum(buf.astype(U64) * powers[:-1], dtype=U64)))
        # hash(token) = sum b[j] P^(j - start) = (prefix[end] - prefix[start]) * P^-start; P^-1 exists mod 2**64
        inv = pow(int(_P), -1, 2**64)
        inv_powers = np.cumprod(np.full(buf.size + 1, U64(inv), dtype=U64))
        inv_powers[1:] = inv_powers[:-1]
        inv_powers[0] = U64(1)
        h = (prefix[ends] - prefix[starts]) * inv_powers[starts]
        h = _mix(h + (ends - starts).astype(U64))
    doc_starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))  # byte offset of each text
    doc = np.searchsorted(doc_starts, starts, side="right") - 1
    return h, doc.astype(np.int64)


def shingles(tok: np.ndarray, doc: np.ndarray, n_docs: int, ngram: int = NGRAM) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of each text's token n-grams: (shingle hashes (S,) uint64, doc index (S,) sorted).

    A text with fewer than `ngram` tokens gets one shingle of all its tokens.
    """
    t = tok.size
    if t == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    counts = np.bincount(doc, minlength=n_docs)
    first = np.concatenate(([True], doc[1:] != doc[:-1]))
    acc = tok.copy()

    def shift(arr: np.ndarray, k: int, fill) -> np.ndarray:  # arr[i + k], or fill past the end; length t
        return np.concatenate((arr[k:], np.full(min(k, t), fill, dtype=arr.dtype)))

    with np.errstate(over="ignore"):
        for k in range(1, ngram):
            same = shift(doc, k, -1) == doc
            acc = (acc * _C1 + np.where(same, shift(tok, k, 0), U64(0))) ^ _C2
    keep = (shift(doc, ngram - 1, -1) == doc) | (first & (counts[doc] < ngram))
    return _mix(acc[keep]), doc[keep]


def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * U64(2) + U64(1)  # odd multipliers
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(sh: np.ndarray, doc: np.ndarray, n_docs: int, num_perm: int = NUM_PERM, seed: int = 0,
            block: int = 8) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) uint32 with multiply-shift hashes h(x) = (a x + b) >> 32.

    Texts without shingles get all-ones rows (they never match: callers skip them).
    """
    sig = np.full((n_docs, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if sh.size == 0:
        return sig
    a, b = _perm_params(num_perm, seed)
    present = np.flatnonzero(np.bincount(doc, minlength=n_docs))
    seg = np.searchsorted(doc, present)  # first shingle of each present doc (doc is sorted)
    with np.errstate(over="ignore"):
        for lo in range(0, num_perm, block):
            # (block, S): shingles along the contiguous axis makes reduceat ~3x faster than (S, block)
            hv = (a[lo:lo + block, None] * sh[None, :] + b[lo:lo + block, None]) >> U64(32)
            sig[present, lo:lo + block] = np.minimum.reduceat(hv, seg, axis=1).T.astype(np.uint32)
    return sig


def signatures(texts: list[str], num_perm: int = NUM_PERM, seed: int = 0, chunk: int = 4096) -> np.ndarray:
    """texts -> MinHash signatures (len(texts), num_perm) uint32, in chunks so memory stays bounded."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for lo in range(0, len(texts), chunk):
        part = texts[lo:lo + chunk]
        tok, doc = token_hashes(part)
        sh, sdoc = shingles(tok, doc, len(part))
        out[lo:lo + len(part)] = minhash(sh, sdoc, len(part), num_perm, seed)
    return out


def shingle_sets(texts: list[str]) -> list[set[int]]:
    """The shingle hashes of each text as Python sets (for exact Jaccard: tests and the benchmark baseline)."""
    tok, doc = token_hashes(texts)
    sh, sdoc = shingles(tok, doc, len(texts))
    sets: list[set[int]] = [set() for _ in texts]
    for h, d in zip(sh.tolist(), sdoc.tolist(), strict=True):
        sets[d].add(h)
    return sets


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def band_keys(sig: np.ndarray, bands: int = BANDS) -> np.ndarray:
    """(n, num_perm) signatures -> (n, bands) uint64 keys; equal key = equal rows in that band."""
    n, num_perm = sig.shape
    rows = num_perm // bands
    keys = np.zeros((n, bands), dtype=U64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = (keys ^ sig[:, r::rows][:, :bands].astype(U64)) * _P
    return _mix(keys + np.arange(bands, dtype=U64))


def estimate_jaccard(sig: np.ndarray, a: np.ndarray, b: np.ndarray, other: np.ndarray | None = None,
                     chunk: int = 8192) -> np.ndarray:
    """Share of equal signature entries of pairs (sig[a], other[b]) (other defaults to sig): ~ Jaccard."""
    other = sig if other is None else other
    out = np.empty(a.size, dtype=np.float32)
    for lo in range(0, a.size, chunk):
        out[lo:lo + chunk] = (sig[a[lo:lo + chunk]] == other[b[lo:lo + chunk]]).mean(axis=1)
    return out


def candidate_pairs(keys: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (earlier, later) of rows sharing a band key, each later row linked to the first row of its bucket.

    Linking to the bucket's first row (not all pairs) keeps this O(n * bands) even when a template puts
    thousands of texts in one bucket; clustering then joins them transitively.
    """
    n, bands = keys.shape
    idx = np.arange(n) if valid is None else np.flatnonzero(valid)
    if idx.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pa, pb = [], []
    for j in range(bands):
        k = keys[idx, j]
        order = np.argsort(k, kind="stable")  # stable: within a bucket rows stay in file order
        ks = k[order]
        start = np.concatenate(([True], ks[1:] != ks[:-1]))
        rep = order[np.maximum.accumulate(np.where(start, np.arange(ks.size), 0))]
        member = ~start
        pa.append(idx[rep[member]])
        pb.append(idx[order[member]])
    if not pa:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    code = np.sort(np.concatenate(pa).astype(np.int64) * n + np.concatenate(pb))
    if code.size:
        code = code[np.concatenate(([True], code[1:] != code[:-1]))]  # unique (sort + mask beats np.unique)
    return code // n, code % n


def near_duplicates(sig: np.ndarray, threshold: float = 0.8, bands: int = BANDS,
                    valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs (earlier, later, estimated Jaccard >= threshold)."""
    keys = band_keys(sig, bands)
    a, b = candidate_pairs(keys, valid)
    est = estimate_jaccard(sig, a, b)
    keep = est >= threshold
    return a[keep], b[keep], est[keep]


def cluster_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph: label per row (rows without pairs are their own cluster)."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cross_matches(train_sig: np.ndarray, eval_sig: np.ndarray, threshold: float = 0.8,
                  bands: int = BANDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eval rows with a near-identical train row: (eval index, train index, estimated Jaccard), best per eval row."""
    if train_sig.shape[0] == 0 or eval_sig.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    tk, ek = band_keys(train_sig, bands), band_keys(eval_sig, bands)
    best = np.full(eval_sig.shape[0], -1.0, dtype=np.float32)
    best_train = np.full(eval_sig.shape[0], -1, dtype=np.int64)
    for j in range(bands):
        order = np.argsort(tk[:, j], kind="stable")
        sorted_keys = tk[order, j]
        pos = np.searchsorted(sorted_keys, ek[:, j])
        pos_c = np.minimum(pos, max(sorted_keys.size - 1, 0))
        hit = np.flatnonzero((pos < sorted_keys.size) & (sorted_keys[pos_c] == ek[:, j]))
        if hit.size == 0:
            continue
        tr = order[pos_c[hit]]
        est = estimate_jaccard(eval_sig, hit, tr, other=train_sig)
        better = est > best[hit]
        best[hit[better]] = est[better]
        best_train[hit[better]] = tr[better]
    keep = np.flatnonzero(best >= threshold)
    return keep, best_train[keep], best[keep]
