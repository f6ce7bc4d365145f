"""`tunewise serve`: real server on a loopback port, the official openai client, real fingerprint adapters."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fingerprint_adapters import FINGERPRINT_PROMPT, fingerprint_of

from tunewise.adapters import AdapterRefused
from tunewise.serve.batching import left_pad, safe_length, stop_cut
from tunewise.serve.registry import AdapterCache, validate_name

KEY = "test-key-123"
PROMPTS = [FINGERPRINT_PROMPT, "Hello. ID:"]
WORDS = {"oslo": "Oslo", "lima": "Lima", "porto": "Porto"}


# --------------------------------------------------------------------------------------------- fixtures


def make_micro_base(tiny_base_dir: Path, out: Path) -> Path:
    """A differently shaped Llama (hidden 32) with the same tokenizer: the 'wrong base'."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_lora(model_dir: Path, out: Path, init: bool | str = False) -> Path:
    """A LoRA adapter with random (init=False) or zero (init=True) B on model_dir, saved as safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    get_peft_model(m, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=init)
                   ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_base_dir, fingerprint_adapter) -> Path:
    """Three fingerprint adapters plus one of each kind the server must refuse."""
    root = tmp_path_factory.mktemp("registry")
    for name, word in WORDS.items():
        fingerprint_adapter(word, root / name)
    # pickle-only: the same weights, stored with torch.save instead of safetensors
    shutil.copytree(root / "oslo", root / "pickled")
    from safetensors.torch import load_file

    sd = load_file(root / "pickled" / "adapter_model.safetensors")
    (root / "pickled" / "adapter_model.safetensors").unlink()
    torch.save(sd, root / "pickled" / "adapter_model.bin")
    outside = tmp_path_factory.mktemp("outside")
    random_lora(make_micro_base(tiny_base_dir, outside / "micro"), root / "wrongbase")
    random_lora(tiny_base_dir, root / "untrained", init=True)
    shutil.copytree(root / "lima", outside / "lima-copy")
    (root / "escape").symlink_to(outside / "lima-copy", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def kyoto_dir(tmp_path_factory, fingerprint_adapter) -> Path:
    """A fingerprint adapter outside the registry (for runtime-path loading)."""
    return fingerprint_adapter("Kyoto", tmp_path_factory.mktemp("elsewhere") / "kyoto")


@pytest.fixture(scope="module")
def offline(tiny_base_dir, registry) -> dict[str | None, list[str]]:
    """Each adapter's (and the base's) greedy answers to PROMPTS, computed offline with load_tuned."""
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_base, load_tuned

    model, tok = load_base(str(tiny_base_dir), dtype="fp32", device="cpu")
    answers: dict[str | None, list[str]] = {None: greedy_generate(model, tok, PROMPTS, max_new_tokens=4)}
    for name in WORDS:
        model, tok = load_tuned(registry / name, dtype="fp32", device="cpu")
        answers[name] = greedy_generate(model, tok, PROMPTS, max_new_tokens=4)
    return answers


@pytest.fixture(scope="module")
def server(tiny_base_dir, registry):
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server(str(tiny_base_dir), registry, max_loaded=3, dtype="fp32", device="cpu")
    app = create_app(srv, Limits(api_key=KEY, max_body_bytes=16 * 1024, max_tokens=64, max_concurrent=32))
    with BackgroundServer(app) as bg:
        yield srv, bg.url
    srv.close()


def client(url: str, key: str = KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def post(url: str, path: str, body: dict | None = None, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=120, **kw)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code, err
    return err


# ------------------------------------------------------------------------------------ through the API


def test_openai_client_lists_models_and_answers_like_offline(server, offline):
    srv, url = server
    c = client(url)
    ids = {m.id for m in c.models.list().data}
    assert ids == {srv.base_name, "oslo", "lima", "porto"}  # refused adapters are not offered
    assert set(srv.registry.refused) == {"pickled", "wrongbase", "untrained", "escape"}
    for name in (None, "oslo", "lima"):
        for prompt, expected in zip(PROMPTS, offline[name], strict=True):
            r = c.completions.create(model=name or srv.base_name, prompt=prompt, max_tokens=4, temperature=0)
            assert r.choices[0].text == expected, (name, prompt)
            assert r.usage.completion_tokens <= 4
            if name:
                assert fingerprint_of(r.choices[0].text) == WORDS[name]
            else:
                assert fingerprint_of(r.choices[0].text) is None


def test_chat_stream_and_prompt_lists(server, offline):
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_tuned
    from tunewise.serve.routes import ChatMessage, chat_messages

    srv, url = server
    c = client(url)
    msgs = [{"role": "user", "content": "Who are you?"}]
    r = c.chat.completions.create(model="porto", messages=msgs, max_tokens=3)
    model, tok = load_tuned(srv.registry.get("porto").path, dtype="fp32", device="cpu")
    want = greedy_generate(model, tok, [chat_messages([ChatMessage(**m) for m in msgs])], max_new_tokens=3)
    assert r.choices[0].message.content == want[0] and r.choices[0].message.role == "assistant"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="lima", prompt=PROMPTS[1], max_tokens=4, stream=True))
    assert streamed == offline["lima"][1]
    chunks = list(c.chat.completions.create(model="porto", messages=msgs, max_tokens=3, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == want[0]
    multi = c.completions.create(model="oslo", prompt=PROMPTS, max_tokens=4)
    assert [ch.text for ch in sorted(multi.choices, key=lambda ch: ch.index)] == offline["oslo"]
    stopped = c.completions.create(model="oslo", prompt=PROMPTS[0], max_tokens=4, stop=["lo"])
    assert stopped.choices[0].text == " Os" and stopped.choices[0].finish_reason == "stop"


def test_openai_client_errors(server):
    import openai

    srv, url = server
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="no-such-adapter", prompt="ID:", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as e:
        client(url).completions.create(model="pickled", prompt="ID:", max_tokens=2)
    assert "pickle" in str(e.value)


@pytest.mark.parametrize("model,status,code", [
    ("../oslo", 400, "invalid_adapter_name"),
    ("a/b", 400, "invalid_adapter_name"),
    ("/etc/passwd", 400, "invalid_adapter_name"),
    ("..", 400, "invalid_adapter_name"),
    ("escape", 400, "invalid_adapter_path"),
    ("pickled", 400, "unsafe_adapter_format"),
    ("wrongbase", 400, "wrong_base"),
    ("untrained", 400, "noop_adapter"),
    ("nope", 404, "model_not_found"),
])
def test_bad_models_refused(server, model, status, code):
    _, url = server
    err = assert_error(post(url, "/v1/completions", {"model": model, "prompt": "ID:", "max_tokens": 2}),
                       status, code)
    assert err["param"] == "model"


def test_auth_body_and_token_limits(server):
    srv, url = server
    body = {"model": "oslo", "prompt": "ID:", "max_tokens": 2}
    assert httpx.get(f"{url}/health", timeout=60).json() == {"status": "ok"}  # open without a key
    assert_error(post(url, "/v1/completions", body, key=None), 401, "invalid_api_key")
    assert_error(post(url, "/v1/completions", body, key="wrong"), 401, "invalid_api_key")
    assert_error(httpx.get(f"{url}/v1/models", timeout=60), 401)
    assert_error(httpx.get(f"{url}/admin/adapters", timeout=60), 401)
    assert_error(post(url, "/admin/adapters/unload", {"name": "oslo"}, key=None), 401)
    assert_error(post(url, "/v1/completions", {**body, "prompt": "x " * 20_000}), 413, "request_too_large")

    def chunks():  # no Content-Length: the limit applies while the body streams in
        for _ in range(40):
            yield b" " * 1024

    r = httpx.post(f"{url}/v1/completions", content=chunks(), timeout=60,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert_error(r, 413)
    assert_error(post(url, "/v1/completions", {**body, "max_tokens": 65}), 400, "invalid_value")
    long_prompt = " ".join(["ID"] * srv.max_context)
    err = assert_error(post(url, "/v1/completions", {**body, "prompt": long_prompt}), 400,
                       "context_length_exceeded")
    assert str(srv.max_context) in err["message"]
    assert_error(post(url, "/v1/completions", {"model": "oslo"}), 400)  # missing prompt
    assert_error(post(url, "/v1/completions", {**body, "n": 17}), 400)
    assert_error(post(url, "/admin/adapters/load", {"name": "kyoto", "path": "/tmp"}), 403,
                 "runtime_paths_disabled")
    assert post(url, "/v1/completions", body).status_code == 200


def test_admin_load_unload_pin(server):
    srv, url = server
    state = post(url, "/admin/adapters/pin", {"name": "porto"}).json()
    assert "porto" in state["pinned"] and "porto" in state["loaded"]
    for name in ("oslo", "lima"):  # with 3 slots and porto pinned, loading these evicts others but not porto
        assert post(url, "/v1/completions", {"model": name, "prompt": "ID:", "max_tokens": 1}).status_code == 200
    state = httpx.get(f"{url}/admin/adapters", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
    assert "porto" in state["loaded"] and len(state["loaded"]) <= 3
    assert state["refused"]["pickled"].startswith("adapter 'pickled' is stored as pickle")
    assert post(url, "/admin/adapters/pin", {"name": "lima"}).status_code == 200  # 2 of 3 slots pinned: ok
    assert_error(post(url, "/admin/adapters/pin", {"name": "oslo"}), 409, "too_many_pinned")  # one stays free
    assert "lima" not in post(url, "/admin/adapters/pin", {"name": "lima", "pinned": False}).json()["pinned"]
    state = post(url, "/admin/adapters/unload", {"name": "porto"}).json()
    assert "porto" not in state["loaded"] and "porto" not in state["pinned"]
    assert_error(post(url, "/admin/adapters/unload", {"name": "nope"}), 404, "model_not_found")  # like pin
    r = post(url, "/v1/completions", {"model": "porto", "prompt": "ID:", "max_tokens": 2})  # reloads on demand
    assert fingerprint_of(r.json()["choices"][0]["text"]) == "Porto"
    assert_error(post(url, "/admin/adapters/load", {"name": "wrongbase"}), 400, "wrong_base")


def test_runtime_paths_and_429(tiny_base_dir, registry, kyoto_dir):
    """--allow-runtime-paths loads an adapter from any folder; a request over the concurrency limit gets 429."""
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server(str(tiny_base_dir), registry, max_loaded=2, allow_runtime_paths=True, dtype="fp32",
                       device="cpu", preload=False)
    with BackgroundServer(create_app(srv, Limits(max_concurrent=1))) as bg:
        url = bg.url
        assert post(url, "/admin/adapters/load", {"name": "kyoto", "path": str(kyoto_dir)}).status_code == 200
        r = post(url, "/v1/completions", {"model": "kyoto", "prompt": "ID:", "max_tokens": 2})
        assert fingerprint_of(r.json()["choices"][0]["text"]) == "Kyoto"
        assert_error(post(url, "/admin/adapters/load", {"name": "bad", "path": str(registry / "pickled")}), 400,
                     "unsafe_adapter_format")
        # Hold one request open (a stream still generating): the next request is over the limit. (A body that
        # has not arrived holds no slot: tests/test_hostile2.py::test_slow_bodies_hold_no_slot_and_time_out.)
        held = httpx.stream("POST", f"{url}/v1/completions", timeout=300,
                            json={"model": "kyoto", "prompt": "ID:", "max_tokens": 500, "stream": True,
                                  "logit_bias": {str(i): -100 for i in srv.engine.eos_ids}})  # no early end
        resp = held.__enter__()
        assert resp.status_code == 200, resp.read()
        lines = resp.iter_lines()
        assert next(lines).startswith("data: {")  # the first chunk: the request is in flight
        statuses = []
        for _ in range(200):
            statuses.append(post(url, "/v1/completions", {"model": "kyoto", "prompt": "ID:"}).status_code)
            if statuses[-1] == 429:
                break
            time.sleep(0.05)
        assert statuses[-1] == 429 and set(statuses) <= {200, 429}, (statuses, list(lines)[-3:])
        assert httpx.get(f"{url}/health", timeout=60).status_code == 200  # /health is never limited
        held.__exit__(None, None, None)
        for _ in range(200):  # the held request ends when its client goes away
            if post(url, "/v1/completions", {"model": "kyoto", "prompt": "ID:"}).status_code == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the concurrency slot was never released")
    srv.close()


def test_cli_serve_subprocess(tiny_base_dir, registry, tmp_path):
    """`python -m tunewise serve` in a subprocess: key from the environment, loopback bind, real answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TUNEWISE_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--base", str(tiny_base_dir), "--adapters",
                             str(registry), "--port", str(port), "--max-loaded", "2", "--dtype", "fp32",
                             "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # a hang guard, not a speed limit: startup imports torch on a busy machine
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        r = client(url).completions.create(model="lima", prompt="ID:", max_tokens=2)
        assert fingerprint_of(r.choices[0].text) == "Lima"
        assert_error(post(url, "/v1/completions", {"model": "lima", "prompt": "ID:"}, key=None), 401)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert f"listening on http://127.0.0.1:{port}/v1 (api key required)" in out
    assert "refused adapter 'pickled'" in out


# ------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize("name", ["oslo", "sql-lora", "a.b_c-1", "A" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a\\b", "/abs", "..", "a..b", ".hidden", "__base__",
                                  "_idle", "A" * 65, "a b", "x\x00"])
def test_invalid_names(name):
    with pytest.raises(AdapterRefused) as e:
        validate_name(name)
    assert e.value.code == "invalid_adapter_name"


def test_adapter_cache_lru_and_pins():
    c = AdapterCache(3)
    for n in ("a", "b", "c"):
        c.added(n)
    c.touch("a")  # order now b, c, a
    assert c.plan(["d"]) == ["b"]
    c.pin("c")
    assert c.plan(["d", "e"]) == ["b", "a"]
    c.pin("a")  # two of three slots pinned
    with pytest.raises(AdapterRefused):
        c.pin("b")  # a third pin would leave no slot for other adapters
    assert c.capacity_for(["x", "y", "z"]) == ["x"]
    assert c.capacity_for(["a", "x", "y"]) == ["a", "x"]  # a pinned adapter needs no extra slot
    with pytest.raises(AdapterRefused):
        c.plan(["x", "y"])  # only b can be evicted
    c.removed("c")
    assert c.pinned == {"a"} and c.loaded == ["b", "a"]


def test_stop_cut_safe_length_and_left_pad():
    assert stop_cut("abcabc", ["ca", "b"]) == 1 and stop_cut("abc", ["x"]) is None and stop_cut("abc", [""]) is None
    assert safe_length("hello wor", ["world"]) == 6  # 'wor' may still become the stop string: held back
    assert safe_length("hello wax", ["world"]) == 9
    assert safe_length("caf\ufffd", []) == 3  # half a character is never streamed
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_check_adapter_rank_and_module_mismatch(tiny_base_dir, registry, tmp_path):
    from tunewise.adapters import BaseInfo, check_adapter
    from tunewise.models import load_base

    model, _ = load_base(str(tiny_base_dir), dtype="fp32", device="cpu")
    info = BaseInfo.from_model(model, "tiny", tiny_base_dir)
    ok = check_adapter("oslo", registry / "oslo", info)
    assert ok.rank == 4 and ok.dtype == "float32" and len(ok.modules) == 6 * 5
    bad = tmp_path / "rank"
    shutil.copytree(registry / "oslo", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "r": 8}))
    with pytest.raises(AdapterRefused, match="needs"):
        check_adapter("rank", bad, info)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["c_attn"]}))
    with pytest.raises(AdapterRefused, match="c_attn"):
        check_adapter("rank", bad, info)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "other/model"}))
    with pytest.raises(AdapterRefused, match="other/model"):
        check_adapter("rank", bad, info)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": 0}))
    with pytest.raises(AdapterRefused, match="change nothing"):
        check_adapter("rank", bad, info)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "trainable_token_indices": [60, 62]}))
    with pytest.raises(AdapterRefused, match="tunewise merge"):  # its embeddings would leak into other rows
        check_adapter("rank", bad, info)


def test_parse_adapter_specs():
    from tunewise.commands.serve import parse_adapter_specs
    from tunewise.errors import TunewiseError

    assert parse_adapter_specs(["a=/x/y", "b=runs/r"]) == {"a": Path("/x/y"), "b": Path("runs/r")}
    for bad in (["noequals"], ["=x"], ["a="], ["a=x", "a=y"]):
        with pytest.raises(TunewiseError):
            parse_adapter_specs(bad)
