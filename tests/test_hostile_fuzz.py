"""Random input to every config loader and every server route (issue 22): an input error is a TunewiseError
(one line, exit 2) or a 4xx -- never a traceback, never a 5xx."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewise.errors import TunewiseError

# 60 examples keep the module at seconds; FUZZ_N=1000 for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_N", 60)), deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

# Keys the loaders know (so documents reach validation, not only the unknown-key check), plus noise.
KEYS = ["base", "method", "data", "train", "eval", "format", "max_seq_len", "lora", "r", "alpha", "target_modules",
        "max_steps", "epochs", "lr", "batch_size", "preserve", "probes", "guards", "output_dir", "task_type",
        "num_labels", "tasks", "methods", "train_size", "eval_size", "out", "seed", "task", "model", "gpu_mem",
        "gpus", "device", "dataset", "data_size", "seq_len", "batch", "rank", "priority", "continual"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(KEYS))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
                         max_leaves=20)


def yaml_text(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


file_contents = (st.binary(max_size=300) | documents.map(lambda d: yaml_text(d).encode())
                 | st.text(max_size=200).map(str.encode) | st.text(max_size=60).map(lambda t: t.encode("utf-16")))


def _config_file(tmp_path, content: bytes):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    return path


def _load_train(path):
    from tunewise.config import load_run_config

    return load_run_config(path)


def _load_continual(path):
    from tunewise.continual import load_continual_config

    return load_continual_config(path)


@pytest.mark.parametrize("loader", [_load_train, _load_continual], ids=["train", "continual"])
@FUZZ
@given(content=file_contents)
def test_config_loaders(tmp_path_factory, loader, content):
    path = _config_file(tmp_path_factory.mktemp("config"), content)
    try:
        loader(path)
    except TunewiseError as e:
        assert e.message and e.exit_code == 2


@FUZZ
@given(doc=documents, override=st.text(max_size=20))
def test_train_config_overrides(tmp_path_factory, doc, override):
    """--set values are YAML too: any text after key= is an answer or a TunewiseError."""
    from tunewise.config import load_run_config

    path = _config_file(tmp_path_factory.mktemp("set"), yaml_text(doc).encode())
    try:
        load_run_config(path, [f"lora.r={override}", f"{override}=1"])
    except TunewiseError as e:
        assert e.message


@FUZZ
@given(content=file_contents)
def test_advise_from_file(tmp_path_factory, content):
    """The whole `advise --from` command: exit 0 / 1 (no method fits) / 2, no traceback."""
    from test_hostile import run_cli

    path = _config_file(tmp_path_factory.mktemp("advise"), content)
    code, output = run_cli(["advise", "--json", "--device", "cpu", "--from", path])
    assert "Traceback" not in output, output
    assert code in (0, 1, 2), output


# ----------------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_base_dir):
    import torch
    from fastapi.testclient import TestClient
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunewise.serve.app import build_server, create_app
    from tunewise.serve.security import Limits

    registry = tmp_path_factory.mktemp("fuzz_registry")
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
                   ).save_pretrained(registry / "one")
    srv = build_server(str(tiny_base_dir), registry, max_loaded=2, dtype="fp32", device="cpu",
                       allow_runtime_paths=True)
    app = create_app(srv, Limits(api_key=None, max_body_bytes=8 * 1024, max_tokens=3, max_concurrent=8))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, srv.base_name
    srv.close()


ROUTES = ["/v1/completions", "/v1/chat/completions", "/admin/adapters/load", "/admin/adapters/unload",
          "/admin/adapters/pin"]
BODY_KEYS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "stop", "stream", "n", "echo",
             "logprobs", "temperature", "top_p", "name", "path", "pin", "pinned", "forget", "role", "content",
             "seed", "top_k", "logit_bias", "stream_options", "top_logprobs", "presence_penalty", "user"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10)
    | st.sampled_from(["one", "tiny", "nope", "user", "ID:", "/", ".."]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(BODY_KEYS) | st.text(max_size=5),
                                                                inner, max_size=4),
    max_leaves=12)
bodies = st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=6) | json_values


@FUZZ
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_server_routes_never_5xx(client, route, body):
    c, base = client
    if isinstance(body, dict) and body.get("model") == "tiny":
        body["model"] = base
    r = c.post(route, content=json.dumps(body, allow_nan=False))
    assert r.status_code < 500, (route, body, r.status_code, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


@FUZZ
@given(raw=st.binary(max_size=200), route=st.sampled_from(ROUTES))
def test_server_routes_raw_bytes(client, raw, route):
    r = client[0].post(route, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, (route, raw, r.status_code, r.text)


@FUZZ
@given(model_id=st.text(min_size=1, max_size=40))
def test_server_get_model(client, model_id):
    from urllib.parse import quote

    r = client[0].get(f"/v1/models/{quote(model_id, safe='')}")
    assert r.status_code < 500, (model_id, r.status_code, r.text)

