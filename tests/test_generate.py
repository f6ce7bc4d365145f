"""The generation engine (tunewise/generate/) against `model.generate(do_sample=False)`, token for token: the tiny
base and smollm2, the model as it is, one adapter, and two adapters (plus base rows) in one batch.

The reference is `model.generate` on each prompt alone (no padding, no batch). The engine decodes rows together,
left-padded, with rows joining and leaving the KV cache, so fp32 rounding differs; where that breaks a near-tie
differently the test names the example and the two logits (`KNOWN_TIES`), and a new divergence fails.
"""

from __future__ import annotations

import pytest
import torch

from tunewise.generate.rows import GenJob
from tunewise.generate.run import generate_jobs, stream_tokens

TINY_PROMPTS = [
    "Aurora Bistro is a",
    "Looking for thai food? Golden Garden in the",
    "23 + 45 =",
    "Schema: CREATE TABLE people (name TEXT, job TEXT, city TEXT, age INTEGER);\n"
    "Question: How many people work as a baker?\nSQL:",
    "The",
    "Golden Garden serves",
    "7 * 8 =",
    "Question: Which city is Aurora Bistro in?\nAnswer:",
]
# (example, adapter) -> (position, engine's token logit, generate's token logit) where a batching tie breaks
# differently; measured, and empty while none does.
KNOWN_TIES: dict[tuple[str, str | None], tuple[int, float, float]] = {}


def reference(model, tok, ids: list[int], n: int) -> list[int]:
    """model.generate's greedy tokens for one prompt alone, up to (not including) EOS."""
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    eos = {tok.eos_token_id}
    return new[: next((i for i, t in enumerate(new) if t in eos), len(new))]


def tie_logits(model, ids: list[int], prefix: list[int], a: int, b: int) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + prefix])).logits[0, -1].float()
    return float(logits[a]), float(logits[b])


def check_against_generate(model, tok, prompts: list, adapters: list[str | None], n: int, max_batch: int,
                           ties: dict = KNOWN_TIES) -> tuple[dict, dict]:
    """Run the engine on every (prompt, adapter) row at once; compare each with model.generate alone."""
    from tunewise.data.formats import prompt_ids

    rows = [(p, a) for a in adapters for p in prompts]
    jobs = [GenJob(a, prompt_ids(p, tok), n) for p, a in rows]
    stats: dict = {}
    results = generate_jobs(model, tok, jobs, max_batch=max_batch, stats=stats)
    found, answers = {}, {}
    for (p, a), job, res in zip(rows, jobs, results, strict=True):
        if a is None and hasattr(model, "disable_adapter") and any(x is not None for x in adapters):
            with model.disable_adapter():
                want = reference(model, tok, job.prompt_ids, n)
        else:
            if a is not None:
                model.set_adapter(a)
            want = reference(model, tok, job.prompt_ids, n)
        got = answers[(str(p), a)] = res.token_ids
        if got != want:
            k = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
            assert k < min(len(got), len(want)), f"{p!r} ({a}): one stopped early: {got} vs {want}"
            found[(str(p), a)] = (k, *tie_logits(model, job.prompt_ids, want[:k], got[k], want[k]))
    for key, (k, la, lb) in found.items():
        assert key in ties, f"engine != model.generate on {key} at token {k}: logits {la:.6f} vs {lb:.6f}"
        assert ties[key][0] == k and abs(la - lb) < 1e-3, (key, k, la, lb)
    return stats, answers


def adapters_changed(answers: dict) -> bool:
    """Did some adapter row answer differently from the same prompt's base row (else routing is untested)?"""
    return any(v != answers[(p, None)] for (p, a), v in answers.items() if a is not None)


@pytest.fixture(scope="module")
def tiny():
    from tunewise.models import load_base

    model, tok = load_base("tiny")
    return model.eval(), tok


def two_adapters(model, seed: int = 0):
    """The model wrapped with two random (non-zero) LoRA adapters, 'one' and 'two', of different ranks."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    targets = ["q_proj", "v_proj", "down_proj"]
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False),
                          adapter_name="one")
    peft.add_adapter("two", LoraConfig(r=8, lora_alpha=8, target_modules=targets[:2], init_lora_weights=False))
    with torch.no_grad():  # small B: the adapters change answers without drowning the base
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    return peft.eval()


def test_engine_equals_generate_on_the_tiny_base(tiny):
    model, tok = tiny
    stats, _ = check_against_generate(model, tok, TINY_PROMPTS, [None], n=12, max_batch=3)
    assert stats["batches"] > 1 and stats["max_rows"] == 3  # rows left and others took their slots


def test_engine_equals_generate_with_one_and_two_adapters_on_tiny():
    from tunewise.models import load_base

    model, tok = load_base("tiny")
    peft = two_adapters(model)
    peft.set_adapter("one")  # the model as it is: its active adapter, through the plain forward
    check_against_generate(peft, tok, TINY_PROMPTS[:4], [None], n=10, max_batch=4)
    stats, answers = check_against_generate(peft, tok, TINY_PROMPTS[:5], [None, "one", "two"], n=10, max_batch=6)
    assert stats["mixed_batches"] > 0 and adapters_changed(answers) and stats["row_lora_forwards"] > 0
    from tunewise.evaluate.generation import greedy_generate  # eval's entry: one adapter per prompt

    texts = greedy_generate(peft, tok, TINY_PROMPTS[:2] * 2, 10, adapters=["one", "one", "two", "two"], batch_size=4)
    assert texts == [tok.decode(answers[(p, a)], skip_special_tokens=True)
                     for a in ("one", "two") for p in TINY_PROMPTS[:2]]


def test_rows_that_share_a_prompt_start_compute_it_once_with_the_same_answers(tiny):
    """Eval's prompts share the task's instruction: computed once per adapter, each row prefills only its rest."""
    from tunewise.models import load_base

    shared = "Extract the restaurant's name, food and area from the sentence below, one slot per line.\nSentence: "
    prompts = [shared + p for p in TINY_PROMPTS]
    model, tok = tiny
    stats, _ = check_against_generate(model, tok, prompts, [None], n=12, max_batch=3)
    assert stats["shared_prefix_rows"] == len(prompts) and stats["batches"] > 1
    peft = two_adapters(load_base("tiny")[0])
    stats, answers = check_against_generate(peft, tok, prompts[:4], [None, "one", "two"], n=10, max_batch=5)
    assert stats["shared_prefix_rows"] == 12 and stats["mixed_batches"] > 0 and adapters_changed(answers)


def test_fixed_batches_for_a_cache_rows_cannot_leave(tiny, monkeypatch):
    """A base with sliding-window layers runs as fixed batches: same answers, rows ride along until all end."""
    from tunewise.generate import batch

    monkeypatch.setattr(batch, "mergeable_cache", lambda model: False)
    model, tok = tiny
    stats, _ = check_against_generate(model, tok, TINY_PROMPTS, [None], n=12, max_batch=3)
    assert stats["batches"] == 3  # 8 rows in batches of 3, 3, 2: none joined a running batch


def test_stop_strings_end_rows_early_and_streaming_gives_the_same_text(tiny):
    from tunewise.evaluate.generation import cut_at_stop, greedy_generate

    model, tok = tiny
    full = greedy_generate(model, tok, TINY_PROMPTS, max_new_tokens=20, batch_size=4)
    cut = greedy_generate(model, tok, TINY_PROMPTS, max_new_tokens=20, stop=["\n", "."], batch_size=4)
    assert cut == [cut_at_stop(t, ["\n", "."]) for t in full]
    assert any(c != f for c, f in zip(cut, full))  # some stop string did end a row
    from tunewise.data.formats import prompt_ids

    for p, want in zip(TINY_PROMPTS[:3], cut, strict=False):
        deltas = list(stream_tokens(model, tok, prompt_ids(p, tok), 20, stop=["\n", "."]))
        assert "".join(d.text for d in deltas) == want and deltas[-1].finish_reason in ("stop", "length")


@pytest.mark.real
def test_engine_equals_generate_on_smollm2_with_two_adapters_in_one_batch():
    from tunewise.models import load_base

    model, tok = load_base("smollm2")
    prompts = [[{"role": "user", "content": q}] for q in
               ("What is the capital of France?", "Name a colour.", "Continue: the quick brown fox")]
    base, _ = check_against_generate(model.eval(), tok, prompts, [None], n=6, max_batch=2)
    assert base["batches"] > 1
    peft = two_adapters(model, seed=1)
    stats, answers = check_against_generate(peft, tok, prompts, [None, "one", "two"], n=6, max_batch=4)
    assert stats["mixed_batches"] > 0 and adapters_changed(answers)
    assert stats["shared_prefix_rows"] == 3 * 3  # the chat template's start, computed once per adapter



def test_slack_layers_hold_what_plain_layers_hold_through_joins_leaves_and_trims():
    """kv.SlackLayer writes each step in place; rows leaving, rows joining and trimmed columns must leave it
    holding exactly what DynamicLayer (torch.cat at every step) holds."""
    from transformers.cache_utils import DynamicLayer

    from tunewise.generate import kv

    class Cache:  # what kv's functions use of a cache
        def __init__(self, layer):
            self.layers = [layer]

    torch.manual_seed(0)
    plain, slack = Cache(DynamicLayer()), Cache(kv.SlackLayer())

    def both(fn):
        return [fn(c) for c in (plain, slack)]

    k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    both(lambda c: c.layers[0].update(k, v))
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is shorter: its first 3 columns are padding
    for step in range(kv.SLACK + 3):  # past the spare columns: the buffer grows
        k, v = torch.randn(mask.shape[0], 2, 1, 4), torch.randn(mask.shape[0], 2, 1, 4)
        both(lambda c, k=k, v=v: c.layers[0].update(k, v))
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.long)], dim=1)
        if step == 5:  # rows 0 and 2 leave; row 1's leading padding columns go
            mask = both(lambda c, m=mask: kv.trim(c, kv.select_rows(c, m, [1])))[0]
            assert mask.shape == (1, 5 - 3 + step + 1)  # its 3 padding columns are gone
        if step == 9:  # two rows join
            ok, ov = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)

            def join(c, ok=ok, ov=ov, m=mask):
                other = Cache(DynamicLayer())
                other.layers[0].update(ok, ov)
                return kv.merge(c, m, other, torch.ones(2, 3, dtype=torch.long))

            mask = both(join)[0]
        assert torch.equal(plain.layers[0].keys, slack.layers[0].keys)
        assert torch.equal(plain.layers[0].values, slack.layers[0].values)
    assert slack.layers[0]._kbuf.shape[-2] > slack.layers[0].keys.shape[-2]  # room left for the next steps


def test_eval_batch_size_default_is_the_engines_rows():
    """commands/eval.py writes the default beside GENERATE_ROWS (it stays torch-free at start-up): one number."""
    import inspect

    from tunewise.commands import eval as eval_cmd
    from tunewise.evaluate.generation import GENERATE_ROWS

    assert f"typer.Option({GENERATE_ROWS}, \"--batch-size\"" in inspect.getsource(eval_cmd)
