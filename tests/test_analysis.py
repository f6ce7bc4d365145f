"""Intruder dimensions, dW spectra, the base-SVD cache, reading (W0, W) from files, and mitigation."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from tunewise.analysis.cache import SvdCache, weight_key
from tunewise.analysis.intruders import (
    base_decomposition,
    count_below,
    count_intruders,
    intruder_similarities,
    left_singular_basis,
    lowrank_similarities,
    max_abs_cos,
    reference_similarities,
    top_singular,
)
from tunewise.analysis.mitigate import mitigate_adapter, refactor_lowrank, scaled_weight, select_intruders
from tunewise.analysis.pipeline import analyze
from tunewise.analysis.spectrum import (
    effective_rank,
    lowrank_singular_values,
    singular_values,
    spectrum_summary,
)
from tunewise.analysis.weights import open_tuned
from tunewise.errors import TunewiseError

EPS = [0.1, 0.3, 0.5, 0.7, 0.9]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))


def structured(d_out: int, d_in: int, decay: float = 0.9, gen: torch.Generator | None = None) -> torch.Tensor:
    """A matrix with a decaying, well-separated spectrum (closer to trained weights than pure noise)."""
    m = min(d_out, d_in)
    U, _ = torch.linalg.qr(torch.randn(d_out, m, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(d_in, m, generator=gen))
    s = decay ** torch.arange(m, dtype=torch.float32) * 10
    return (U * s) @ V.T


# ------------------------------------------------------------------------------------------- pure functions

@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (64, 64), (40, 200)])
@pytest.mark.parametrize("kind", ["lowrank-small", "lowrank-large", "dense", "structured-lowrank"])
def test_counts_match_direct_reference(shape, kind):
    # crc32, not hash(): str hashes change with PYTHONHASHSEED, which made the data (and the test) differ per run
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, kind)).encode()))
    d_out, d_in = shape
    W0 = structured(d_out, d_in, gen=g) if kind.startswith("structured") else torch.randn(shape, generator=g)
    if kind == "dense":
        dW = 0.3 * torch.randn(shape, generator=g)
    else:
        scale = {"lowrank-small": 0.3, "lowrank-large": 2.0, "structured-lowrank": 1.0}[kind]
        dW = scale * torch.randn(d_out, 4, generator=g) @ torch.randn(4, d_in, generator=g)
    W = W0 + dW
    fast = intruder_similarities(W0, W, k=10)
    ref = torch.tensor(reference_similarities(W0, W, k=10))
    assert fast.shape == ref.shape == (10,)
    assert torch.allclose(fast, ref, atol=2e-4), (fast - ref).abs().max()
    assert count_below(fast, EPS) == count_below(ref, EPS)


@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (64, 64), (200, 40)])
@pytest.mark.parametrize("scale", [0.05, 0.3, 2.0])
def test_lowrank_route_matches_direct_reference(shape, scale):
    """LoRA updates analysed in the base's basis (no Gram of W) give the direct method's counts."""
    g = torch.Generator().manual_seed(hash((shape, scale)) % 2**31)
    d_out, d_in = shape
    for W0 in (torch.randn(shape, generator=g), structured(d_out, d_in, gen=g)):
        B, A = scale * torch.randn(d_out, 8, generator=g), torch.randn(8, d_in, generator=g)
        W = W0 + B @ A
        sims, svals = lowrank_similarities(base_decomposition(W0), W0, B, A, 10)
        ref = torch.tensor(reference_similarities(W0, W, k=10))
        assert torch.allclose(sims, ref, atol=2e-4), (sims - ref).abs().max()
        assert count_below(sims, EPS) == count_below(ref, EPS)
        assert torch.allclose(svals, torch.linalg.svdvals(W)[:10], rtol=1e-4)


def test_basis_and_top_triplets_are_singular_vectors():
    W = torch.randn(30, 70)
    U0, S0 = left_singular_basis(W)
    assert U0.shape == (30, 30)
    assert torch.allclose(S0, torch.linalg.svdvals(W), rtol=1e-4)
    assert torch.allclose(U0.T @ U0, torch.eye(30), atol=1e-5)
    U, S, V = top_singular(W.T, 5)  # tall side
    assert torch.allclose(W.T @ V, U * S, atol=1e-4)
    assert torch.allclose(W @ U, V * S, atol=1e-4)


def test_small_dense_update_gives_no_intruders():
    """Full-fine-tuning-like: a small dense dW only nudges the vectors."""
    torch.manual_seed(1)
    for W0 in (torch.randn(64, 96), structured(96, 64)):
        dW = 1e-3 * torch.randn(W0.shape)
        sims = intruder_similarities(W0, W0 + dW, k=10)
        assert count_below(sims, 0.5) == 0
        assert float(sims.min()) > 0.9


def planted(W0: torch.Tensor, factor: float = 2.0, protect: int = 16):
    """dW = s u v^T with s = factor * sigma_1 and u (v) an equal-weight, random-sign mix of W0's left (right)
    singular vectors after the top `protect`: orthogonal to the top ones, max |cos| to any base vector is
    1 / sqrt(min(shape) - protect)."""
    U, S, Vh = torch.linalg.svd(W0, full_matrices=False)
    signs = torch.randint(0, 2, (U.shape[1] - protect,)).float() * 2 - 1
    u = U[:, protect:] @ signs
    v = Vh[protect:].T @ signs
    u, v = u / u.norm(), v / v.norm()
    return factor * S[0] * torch.outer(u, v), u, v


@pytest.mark.parametrize("shape", [(64, 96), (96, 64), (48, 48)])
def test_planted_direction_is_exactly_one_intruder(shape):
    torch.manual_seed(2)
    W0 = torch.randn(shape)
    dW, u, _ = planted(W0)
    U0, _ = left_singular_basis(W0)
    # precondition of the construction: u itself is far from every base vector
    assert float(max_abs_cos(u[:, None], U0)) < 0.5
    sims = intruder_similarities(W0, W0 + dW, k=10)
    assert count_below(sims, 0.5) == 1
    assert float(sims[0]) < 0.5  # and it is the top vector: its singular value exceeds W0's largest
    assert count_intruders(U0, top_singular(W0 + dW, 10)[0], 10, 0.5) == 1


def test_count_below_is_strict_and_multi_eps():
    sims = torch.tensor([0.2, 0.5, 0.7, 0.95])
    assert count_below(sims, 0.5) == 1
    assert count_below(sims, [0.3, 0.5, 0.71, 1.0]) == {0.3: 1, 0.5: 1, 0.71: 3, 1.0: 4}


# ------------------------------------------------------------------------------------------------ spectrum

def test_spectrum_functions():
    B, A = torch.randn(40, 3), torch.randn(3, 50)
    dense = torch.linalg.svdvals(2.5 * B @ A).double()
    low = lowrank_singular_values(B, A, 2.5)
    assert torch.allclose(low, dense[:3], rtol=1e-5)
    assert torch.allclose(singular_values(2.5 * B @ A)[:3], dense[:3], rtol=1e-5)
    assert effective_rank(torch.tensor([3.0, 1.0])) == 1  # 9/10 of the energy is exactly 90%
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 4
    assert effective_rank(torch.tensor([0.0, 0.0])) == 0
    W0 = torch.randn(40, 50)
    summ = spectrum_summary(low, torch.linalg.svdvals(W0))
    assert summ["rank"] == 3
    assert summ["fro_rel"] == pytest.approx(float((2.5 * B @ A).norm() / W0.norm()), rel=1e-4)
    assert summ["spectral_rel"] == pytest.approx(float(dense[0] / torch.linalg.svdvals(W0)[0]), rel=1e-4)


# --------------------------------------------------------------------------------------------------- cache

def test_cache_hits_and_keys(tmp_path):
    W = torch.randn(30, 20)  # tall: U0, S0 and V0 are stored
    cache = SvdCache(tmp_path / "svd")
    d1 = cache.get_or_compute(W, base_decomposition)
    d2 = cache.get_or_compute(W.clone(), base_decomposition)
    assert (cache.misses, cache.hits) == (1, 1)
    assert d1.keys() == d2.keys() == {"U0", "S0", "V0"}
    assert all(torch.equal(d1[name], d2[name]) for name in d1)
    W2 = W.clone()
    W2[0, 0] += 1e-6
    assert weight_key(W2) != weight_key(W)
    # a corrupt entry is recomputed, not fatal
    entry = next((tmp_path / "svd").glob("*.safetensors"))
    entry.write_bytes(b"garbage")
    cache.get_or_compute(W, base_decomposition)
    assert cache.misses == 2
    # a well-formed file whose numbers were altered fails the digest check
    from safetensors.torch import load_file, save

    d = load_file(str(entry))
    d["U0"][0, 0] += 1.0
    entry.write_bytes(save(d, metadata={"digest": "0" * 32}))
    d3 = cache.get_or_compute(W, base_decomposition)
    assert cache.misses == 3 and torch.equal(d3["U0"], d1["U0"])


# ------------------------------------------------------------------------------------- files and mitigation

@pytest.fixture(scope="module")
def micro_base(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    out = tmp_path_factory.mktemp("base")
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def _peft(base_dir, **lora_kw):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    return get_peft_model(model, LoraConfig(init_lora_weights=False, **lora_kw))


@pytest.mark.parametrize("kw", [
    {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]},
    {"r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": ["q_proj", "up_proj"],
     "rank_pattern": {"up_proj": 2}, "alpha_pattern": {"q_proj": 3}},
    {"r": 2, "lora_alpha": 4, "use_dora": True, "target_modules": ["k_proj", "o_proj"]},
])
def test_merged_weights_match_peft(micro_base, tmp_path, kw):
    """W read from the adapter files equals PEFT's own merge (LoRA, rsLoRA + patterns, DoRA)."""
    peft_model = _peft(micro_base, **kw)
    peft_model.save_pretrained(tmp_path / "adapter")
    tw = open_tuned(str(micro_base), str(tmp_path / "adapter"))
    assert tw.kind == ("dora" if kw.get("use_dora") else "lora")
    merged = peft_model.merge_and_unload().state_dict()
    pairs = list(tw.pairs())
    assert len(pairs) == 2 * len(kw["target_modules"])
    for p in pairs:
        assert torch.allclose(p.W, merged[p.name + ".weight"], atol=1e-6), p.name


def test_full_model_folder_and_unchanged_matrices(micro_base, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_base)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.add_(1e-3 * torch.randn_like(model.model.layers[1].mlp.up_proj.weight))
    model.save_pretrained(tmp_path / "full")
    res = analyze(str(micro_base), str(tmp_path / "full"), eps=[0.5])
    assert res.kind == "full"
    assert len(res.matrices) == 14  # 7 linear per layer, embeddings / head excluded
    assert res.total == {0.5: 0}
    changed = [m for m in res.matrices if m.spectrum["fro_rel"] > 0]
    assert [m.name for m in changed] == ["model.layers.1.mlp.up_proj"]


def _planted_adapter(base_dir, out, module="model.layers.0.self_attn.q_proj"):
    """A rank-2 LoRA whose q_proj update in layer 0 is one planted intruder (+ a tiny second direction)."""
    from safetensors.torch import load_file

    peft_model = _peft(base_dir, r=2, lora_alpha=4, target_modules=["q_proj"])
    W0 = load_file(str(base_dir / "model.safetensors"))[module + ".weight"]
    dW, u, v = planted(W0, factor=3.0)
    s = float(dW.norm())
    with torch.no_grad():
        for name, mod in peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                B, A = mod.lora_B["default"].weight, mod.lora_A["default"].weight
                if name.endswith(module):
                    scaling = mod.scaling["default"]
                    B.zero_()
                    A.zero_()
                    B[:, 0] = u * (s / scaling) ** 0.5
                    A[0] = v * (s / scaling) ** 0.5
                    B[:, 1] = 1e-4 * torch.randn(B.shape[0])
                    A[1] = torch.randn(A.shape[1])
                else:
                    B.zero_()
    peft_model.save_pretrained(out)
    return u, v


def test_analyze_and_mitigate_planted_adapter(micro_base, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _planted_adapter(micro_base, tmp_path / "ad")
    res = analyze(str(micro_base), str(tmp_path / "ad"), eps=[0.5])
    counts = {m.name: m.intruders[0.5] for m in res.matrices}
    assert counts == {"model.layers.0.self_attn.q_proj": 1, "model.layers.1.self_attn.q_proj": 0}
    assert res.total[0.5] == 1 and res.as_dict()["summary"]["total"] == {"0.5": 1}
    tw = open_tuned(str(micro_base), str(tmp_path / "ad"))

    # lambda = 1: a no-op, bit for bit
    rep1 = mitigate_adapter(tw, tmp_path / "same", 1.0)
    a, b = load_file(str(tmp_path / "ad/adapter_model.safetensors")), load_file(str(tmp_path / "same/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert rep1["matrices_changed"] == 0

    # lambda = 0: the direction is removed; the adapter still loads with PEFT and has no intruder left
    rep0 = mitigate_adapter(tw, tmp_path / "gone", 0.0)
    # the truncation back to rank 2 drops what W0 coupled into the removed triplet: reported, not hidden
    assert rep0["matrices_changed"] == 1 and 0 < rep0["max_rel_error"] < 0.5
    assert json.loads((tmp_path / "gone/mitigation.json").read_text())["lambda"] == 0.0
    res0 = analyze(str(micro_base), str(tmp_path / "gone"), eps=[0.5])
    assert res0.total[0.5] == 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_base), str(tmp_path / "gone"))
    merged = model.merge_and_unload().state_dict()["model.layers.0.self_attn.q_proj.weight"]
    pair = next(p for p in tw.pairs() if p.name == "model.layers.0.self_attn.q_proj")
    U, S, V = top_singular(pair.W, 1)
    assert float(S[0]) > 2 * float(torch.linalg.svdvals(pair.W0)[0])
    assert float((merged @ V[:, 0]).norm()) < 0.02 * float(S[0])  # the intruder's singular value is gone

    # lambda = 0.5 halves it
    mitigate_adapter(tw, tmp_path / "half", 0.5)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_base), str(tmp_path / "half"))
    merged = model.merge_and_unload().state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert float(U[:, 0] @ merged @ V[:, 0]) == pytest.approx(0.5 * float(S[0]), rel=1e-3)


def test_refactor_matches_dense_truncated_svd():
    torch.manual_seed(4)
    W0 = torch.randn(30, 40)
    B, A, scaling = torch.randn(30, 3), torch.randn(3, 40), 0.7
    W = W0 + scaling * B @ A
    U, S, V = top_singular(W, 10)
    idx = [0, 2]
    lam = 0.3
    B2, A2, err = refactor_lowrank(B, A, scaling, U[:, idx], S[idx], V[:, idx], lam, rank=3)
    target = scaled_weight(W, U[:, idx], S[idx], V[:, idx], lam) - W0
    Ud, Sd, Vhd = torch.linalg.svd(target.double())
    best = (Ud[:, :3] * Sd[:3]) @ Vhd[:3]
    assert torch.allclose((scaling * B2 @ A2).double(), best, atol=1e-4)
    assert err == pytest.approx(float(Sd[3:].norm() / Sd.norm()), rel=1e-3, abs=1e-6)
    # enough rank: exact
    B3, A3, err3 = refactor_lowrank(B, A, scaling, U[:, idx], S[idx], V[:, idx], lam, rank=5)
    assert err3 < 1e-6 and torch.allclose(scaling * B3 @ A3, target, atol=1e-4)
    assert select_intruders(torch.tensor([0.9, 0.2, 0.4]), 0.5, "top") == [1]
    assert select_intruders(torch.tensor([0.9, 0.2, 0.4]), 0.5, "all") == [1, 2]


def test_mitigate_refuses_full_and_dora(micro_base, tmp_path):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(micro_base).save_pretrained(tmp_path / "full")
    with pytest.raises(TunewiseError, match="full fine-tuned"):
        mitigate_adapter(open_tuned(str(micro_base), str(tmp_path / "full")), tmp_path / "x", 0.5)
    _peft(micro_base, r=2, lora_alpha=4, use_dora=True, target_modules=["q_proj"]).save_pretrained(tmp_path / "d")
    with pytest.raises(TunewiseError, match="DoRA"):
        mitigate_adapter(open_tuned(str(micro_base), str(tmp_path / "d")), tmp_path / "x", 0.5)


def test_wrong_base_is_a_clear_error(micro_base, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    other.save_pretrained(tmp_path / "other")
    _peft(micro_base, r=2, lora_alpha=4, target_modules=["q_proj"]).save_pretrained(tmp_path / "ad")
    with pytest.raises(TunewiseError, match="base"):
        analyze(str(tmp_path / "other"), str(tmp_path / "ad"))
