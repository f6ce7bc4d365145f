"""OpenAI sampling, token streaming and disconnects on a real loopback server, asked with the official openai client.

The sampling math is checked on its own first (pure tensors), then through the API: temperature 0 is the
offline greedy answer, a seed gives the same text whatever shares the batch, fields that would change the answer
but are not implemented are refused by name, a stream arrives in many chunks, and a client that goes away frees
its row.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tunewise.serve.sampling import SamplingParams, choose, draw, filter_logits, make_generator

KEY = "sampling-key"
NO_EOS = {"0": -100}  # the tiny base's EOS is token 0: banning it makes an answer run to max_tokens


# ------------------------------------------------------------------------------------------ pure math


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_logits(logits, 1.0, 2, 1.0)).tolist() == [False, False, True, True]
    # the nucleus is the fewest most likely tokens reaching top_p: 0.5 + 0.3 >= 0.7
    assert torch.isinf(filter_logits(logits, 1.0, 0, 0.7)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_logits(logits, 1.0, 0, 0.1)).tolist() == [False, True, True, True]
    assert not torch.isinf(filter_logits(logits, 1.0, 0, 1.0)).any()
    assert torch.allclose(filter_logits(logits, 2.0, 0, 1.0), logits / 2)


def test_draw_follows_the_distribution_and_the_seed():
    probs = torch.tensor([0.7, 0.2, 0.1, 0.0])
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(torch.log(probs), g) for _ in range(3000)]), minlength=4)
    assert counts[3] == 0 and abs(counts[0] / 3000 - 0.7) < 0.05 and abs(counts[2] / 3000 - 0.1) < 0.03
    a = [draw(torch.log(probs), torch.Generator().manual_seed(5)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw


def test_choose_rows_are_independent_and_greedy_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    hot = SamplingParams(temperature=1.5, seed=11, logprobs=3)
    greedy = SamplingParams(logprobs=0)
    first = choose(logits, [hot, greedy, hot], [make_generator(hot), None, make_generator(hot)])
    assert first[1].token == int(logits[1].argmax()) and first[1].top == ()
    assert first[0].token == choose(logits[:1], [hot], [make_generator(hot)])[0].token  # alone = in a batch
    assert len(first[0].top) == 3 and first[0].top[0][1] >= first[0].top[1][1]
    assert first[0].logprob == pytest.approx(float(torch.log_softmax(logits[0], -1)[first[0].token]))
    huge_seed = SamplingParams(temperature=1.0, seed=2**70)  # any integer a client sends is a usable seed
    draws = [torch.rand(4, generator=make_generator(huge_seed)) for _ in range(2)]
    other = torch.rand(4, generator=make_generator(SamplingParams(temperature=1.0, seed=2**70 + 1)))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], other)  # seeded by it, reproducibly
    assert SamplingParams(temperature=1e-30).greedy  # would overflow logits / temperature: argmax instead
    banned = SamplingParams(logit_bias=((int(logits[1].argmax()), -100.0),))
    assert choose(logits[1:2], [banned], [None])[0].token != int(logits[1].argmax())


def test_defaults_come_from_the_base_generation_config():
    from transformers import GenerationConfig

    from tunewise.serve.app import default_sampling

    assert default_sampling(GenerationConfig()) == SamplingParams()  # generate's own default: greedy
    assert default_sampling(None) == SamplingParams()
    got = default_sampling(GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, top_k=20))
    assert (got.temperature, got.top_p, got.top_k) == (0.7, 0.9, 20)


# ------------------------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def registry(tmp_path_factory, fingerprint_adapter) -> Path:
    root = tmp_path_factory.mktemp("sampling-registry")
    for name, word in {"oslo": "Oslo", "lima": "Lima"}.items():
        fingerprint_adapter(word, root / name)
    return root


@pytest.fixture(scope="module")
def server(tiny_base_dir, registry):
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server(str(tiny_base_dir), registry, dtype="fp32", device="cpu")
    with BackgroundServer(create_app(srv, Limits(api_key=KEY, max_tokens=500))) as bg:
        yield srv, bg.url
    srv.close()


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def test_temperature_zero_is_the_offline_greedy_answer(server, registry, tiny_base_dir):
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_base, load_tuned

    srv, url = server
    c = client(url)
    prompts = ["ID:", "Hello. ID:"]
    model, tok = load_base(str(tiny_base_dir), dtype="fp32", device="cpu")
    offline = {srv.base_name: greedy_generate(model, tok, prompts, max_new_tokens=10)}
    model, tok = load_tuned(registry / "oslo", dtype="fp32", device="cpu")
    offline["oslo"] = greedy_generate(model, tok, prompts, max_new_tokens=10)
    for name, want in offline.items():
        for prompt, text in zip(prompts, want, strict=True):
            for extra in ({"temperature": 0}, {}, {"temperature": 1.5, "extra_body": {"top_k": 1}},
                          {"temperature": 1, "top_p": 1e-6}):  # top_k is vLLM's field: the client sends it as extra
                r = c.completions.create(model=name, prompt=prompt, max_tokens=10, **extra)
                assert r.choices[0].text == text, (name, prompt, extra)


def test_seed_gives_the_same_text_whatever_shares_the_batch(server):
    srv, url = server
    c = client(url)

    def ask(seed: int = 1234, model: str | None = None, temperature: float = 1.0, prompt: str = "Hello. ID:"):
        return c.completions.create(model=model or srv.base_name, prompt=prompt, max_tokens=16, seed=seed,
                                    temperature=temperature, logit_bias=NO_EOS).choices[0].text

    alone = ask()
    steps_before = srv.engine.describe()["mixed_batches"]
    with ThreadPoolExecutor(8) as pool:  # the same request again, among others for other adapters and settings
        others = [pool.submit(ask, s, m, t, p) for s, m, t, p in
                  [(1, "oslo", 0.8, "ID:"), (2, "lima", 1.2, "ID:"), (3, None, 0.0, "ID:"), (4, "oslo", 1.0, "Hi")]]
        again = [pool.submit(ask) for _ in range(3)]
        [f.result() for f in others]
        assert [f.result() for f in again] == [alone] * 3
    assert srv.engine.describe()["mixed_batches"] > steps_before  # they really shared decoding steps
    assert len({ask(seed) for seed in range(6)}) > 1  # the seed matters: sampling is on


def test_n_choices_and_logprobs(server):
    srv, url = server
    c = client(url)
    r = c.completions.create(model=srv.base_name, prompt="ID:", max_tokens=8, n=3, seed=7, temperature=1.0)
    texts = [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]
    assert [ch.index for ch in r.choices] == [0, 1, 2] and len(set(texts)) > 1
    again = c.completions.create(model=srv.base_name, prompt="ID:", max_tokens=8, n=3, seed=7, temperature=1.0)
    assert [ch.text for ch in sorted(again.choices, key=lambda ch: ch.index)] == texts
    single = c.completions.create(model=srv.base_name, prompt="ID:", max_tokens=8, seed=7, temperature=1.0)
    assert single.choices[0].text == texts[0]  # choice k draws with seed + k

    r = c.completions.create(model="oslo", prompt="ID:", max_tokens=6, temperature=0, logprobs=2, logit_bias=NO_EOS)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.tokens) == r.usage.completion_tokens == 6
    assert all(x <= 0 for x in lp.token_logprobs) and all(1 <= len(t) <= 2 for t in lp.top_logprobs)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy takes the most likely token
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0

    chat = c.chat.completions.create(model="lima", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                     logprobs=True, top_logprobs=3, temperature=0)
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and bytes(t.bytes).decode() == t.token for t in content)


@pytest.mark.parametrize("extra,param", [
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"repetition_penalty": 1.0}, "repetition_penalty"),  # vLLM's, not OpenAI's: refused even at 1
    ({"min_p": 0.1}, "min_p"),
    ({"echo": True}, "echo"),
    ({"best_of": 3}, "best_of"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 300}}, "logit_bias"),
    ({"response_format": {"type": "grammar"}}, "response_format.type"),  # not an OpenAI format
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
])
def test_fields_that_would_change_the_answer_are_refused_by_name(server, extra, param):
    srv, url = server
    r = post(url, "/v1/completions", {"model": srv.base_name, "prompt": "ID:", "max_tokens": 2, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"]


def test_neutral_openai_fields_are_accepted(server):
    import openai

    srv, url = server
    c = client(url)
    neutral = {"presence_penalty": 0, "frequency_penalty": 0, "user": "u-1", "logit_bias": {}, "best_of": 1}
    assert post(url, "/v1/completions", {"model": srv.base_name, "prompt": "ID:", "max_tokens": 2, **neutral}
                ).status_code == 200
    r = c.chat.completions.create(model="oslo", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                  presence_penalty=0, frequency_penalty=0, user="u-1", logit_bias={},
                                  metadata={"team": "a"}, store=False, response_format={"type": "text"},
                                  tool_choice="none", parallel_tool_calls=False)
    assert r.choices[0].message.role == "assistant"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="oslo", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                  extra_body={"suffix": "x"})  # a completions field: no chat API has it
    assert "suffix" in str(e.value)


# ------------------------------------------------------------------------------------------ streaming


def test_streams_arrive_token_by_token(server):
    srv, url = server
    c = client(url)
    body = {"model": srv.base_name, "prompt": "ID:", "max_tokens": 12, "temperature": 0, "logit_bias": NO_EOS}
    whole = c.completions.create(**body).choices[0].text
    chunks = list(c.completions.create(**body, stream=True))
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].text]) >= 4  # not one chunk at the end
    assert "".join(ch.choices[0].text for ch in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"

    stop = whole[5:8]  # a stop string in the middle: the stream holds back what might become it
    cut = c.completions.create(**body, stop=[stop]).choices[0].text
    assert cut == whole[:whole.find(stop)]
    assert "".join(ch.choices[0].text for ch in c.completions.create(**body, stop=[stop], stream=True)) == cut

    msgs = [{"role": "user", "content": "Hello"}]
    full = c.chat.completions.create(model="lima", messages=msgs, max_tokens=10, temperature=0, logit_bias=NO_EOS)
    chunks = list(c.chat.completions.create(model="lima", messages=msgs, max_tokens=10, temperature=0,
                                            logit_bias=NO_EOS, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) >= 4
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
        full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(ch.usage is None for ch in chunks[:-1])

    n2 = list(c.completions.create(**{**body, "temperature": 1.0}, n=2, seed=3, stream=True))
    texts = {i: "".join(ch.choices[0].text for ch in n2 if ch.choices[0].index == i) for i in (0, 1)}
    whole2 = c.completions.create(**{**body, "temperature": 1.0}, n=2, seed=3)
    assert texts == {ch.index: ch.text for ch in whole2.choices}


def assert_row_freed(srv, url: str, before: dict) -> None:
    """The 480-token request left unfinished: its row freed, counted as cancelled, and the server still answers."""
    for _ in range(1200):  # a hang guard: the row leaves at the step after the server notices
        if srv.engine.running == 0:
            break
        time.sleep(0.05)
    after = srv.engine.describe()
    assert after["running"] == 0
    assert after["cancelled"] == before["cancelled"] + 1  # it left unfinished (480 tokens were never made)
    assert after["steps"] - before["steps"] < 480
    r = client(url).completions.create(model="oslo", prompt="ID:", max_tokens=2, temperature=0)
    assert r.choices[0].text.strip().startswith("Oslo")


def test_a_client_that_disconnects_frees_its_row(server):
    srv, url = server
    before = srv.engine.describe()
    body = {"model": "oslo", "prompt": "ID:", "max_tokens": 480, "stream": True, "logit_bias": NO_EOS}
    received = 0
    with httpx.Client(timeout=120) as h, h.stream("POST", f"{url}/v1/completions", json=body,
                                                  headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                received += len(json.loads(line[6:])["choices"][0]["text"])
                if received >= 10:
                    break  # leave mid-stream: closing the response closes the connection
    assert_row_freed(srv, url, before)


def test_a_client_that_hangs_up_on_a_plain_request_frees_its_row(server):
    """Not streamed: the server notices the hang-up while the answer is still being generated and cancels it."""
    srv, url = server
    before = srv.engine.describe()
    body = {"model": "oslo", "prompt": "ID:", "max_tokens": 480, "logit_bias": NO_EOS}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(120, read=1.0)) as h:
        h.post(f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert_row_freed(srv, url, before)


# ------------------------------------------------------------------------------------------ chat template


def test_chat_uses_the_base_chat_template(tmp_path, tiny_base_dir):
    """A base whose tokenizer has a chat template: a chat request is answered on exactly that rendering."""
    from transformers import AutoTokenizer

    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    base = shutil.copytree(tiny_base_dir, tmp_path / "templated")
    cfg_file = base / "tokenizer_config.json"
    template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant]{% endif %}")
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "chat_template": template}))
    tok = AutoTokenizer.from_pretrained(base)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "[system] Be brief.\n[user] Name a city.\n[assistant]"
    srv = build_server(str(base), dtype="fp32", device="cpu")
    try:
        with BackgroundServer(create_app(srv, Limits())) as bg:
            c = client(bg.url)
            chat = c.chat.completions.create(model=srv.base_name, messages=msgs, max_tokens=12, temperature=0,
                                             logit_bias=NO_EOS)
            plain = c.completions.create(model=srv.base_name, prompt=rendered, max_tokens=12, temperature=0,
                                         logit_bias=NO_EOS)
            assert chat.choices[0].message.content == plain.choices[0].text
            assert chat.usage.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
    finally:
        srv.close()


def test_greedy_rows_choose_where_the_logits_are_as_choose_does():
    from tunewise.generate.sampling import choose_where

    torch.manual_seed(3)
    logits = torch.randn(5, 300)
    logits[2, 7] = logits[2, 9] = logits[2].max() + 1  # a tie: both take the first
    greedy = [SamplingParams()] * 5
    want = choose(logits, greedy, [None] * 5)
    got = choose_where(logits, greedy, [None] * 5)
    assert [c.token for c in got] == [c.token for c in want] and got[2].token == 7
    assert [c.logprob for c in got] == pytest.approx([c.logprob for c in want], abs=1e-5)
    asks = [SamplingParams(logprobs=2)] + greedy[1:]  # a row asking for logprobs goes the full way
    assert choose_where(logits, asks, [None] * 5)[0].top == choose(logits, asks, [None] * 5)[0].top
