"""Hostile input, round 2 (issue 36): numbers that are not finite or not what their field means, JSON that is
not JSON, scores computed from nothing, YAML that means something else than it says, two writers in one run
folder, outputs replaced without --force, runs resumed on other inputs.

Each case runs `tunewise.cli.main` in-process (test_hostile's harness) in its own folder and asserts the exit
code, that the message names the field or file, and that every file that existed before is byte-identical after.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_hostile import refused, run_cli, write

BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n")


def run_yaml(body: str = "") -> str:
    return f"base: tiny\ndata:\n  train: d.jsonl\n  max_seq_len: 32\ntrain:\n  max_steps: 1\n  device: cpu\n{body}"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.jsonl", "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n"
                                        for i in range(8)))
    return tmp_path




# ------------------------------------------------------------------------------------ numbers (one rule)

NUMBER_CASES = [
    ("rank-bool", "lora:\n  r: true\n", ["lora.r", "not true or false"]),
    ("alpha-bool", "lora:\n  alpha: false\n", ["lora.alpha", "not true or false"]),
    ("lr-inf", "  lr: .inf\n", ["train.lr", "finite"]),
    ("lr-nan", "  lr: .nan\n", ["train.lr", "finite"]),
    ("warmup-neg-inf", "  warmup_ratio: -.inf\n", ["train.warmup_ratio"]),
    ("guard-nan", "guards:\n  spike_factor: .nan\n", ["guards.spike_factor", "finite"]),
    ("seed-huge", "  seed: 100000000000000000000000\n", ["train.seed", "too large"]),
    ("steps-fraction", "  batch_size: 2.5\n", ["train.batch_size", "whole number"]),
    ("preserve-bool", "preserve:\n  limit: true\n", ["preserve.limit", "not true or false"]),
]


@pytest.mark.parametrize("body, needles", [c[1:] for c in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES])
def test_run_config_numbers(ws, body, needles):
    write(ws / "run.yaml", run_yaml(body))
    refused(ws, ["train", "run.yaml", "--out", "out"], 2, ["run.yaml", *needles])
    assert not (ws / "out").exists()


@pytest.mark.parametrize("override, field", [("train.lr=.inf", "train.lr"), ("lora.r=true", "lora.r"),
                                             ("lora.dropout=.nan", "lora.dropout")])
def test_set_override_numbers(ws, override, field):
    write(ws / "run.yaml", run_yaml())
    refused(ws, ["train", "run.yaml", "--set", override, "--out", "out"], 2, [field])


def test_other_config_systems_share_the_rule(ws):
    write(ws / "c.yaml", "tasks: [sql, math]\nmethods: [{method: lora, r: true}]\nepochs: .inf\n")
    out = refused(ws, ["continual", "c.yaml"], 2, ["c.yaml", "methods.0.r", "epochs", "finite"])
    assert "not true or false" in out
    write(ws / "a.yaml", "task: sql\nmodel: tiny\ngpu_mem: .inf\ndevice: cuda\n")
    refused(ws, ["advise", "--json", "--from", "a.yaml"], 2, ["a.yaml", "gpu_mem"])


@pytest.mark.parametrize("args, flag", [(["merge", "x", "y", "--tolerance", "inf"], "--tolerance"),
                                        (["estimate", "--target-share", "nan"], "--target-share"),
                                        (["advise", "--task", "sql", "--budget", "-inf"], "--budget"),
                                        (["serve", "--batch-wait-ms", "nan"], "--batch-wait-ms")])
def test_cli_floats_are_finite(ws, args, flag):
    out = refused(ws, args, 2, [flag])
    assert "finite" in out or "less than" in out


def test_json_written_by_tunewise_is_strict(tmp_path):
    from tunewise.fileio import append_jsonl, atomic_write_json

    atomic_write_json(tmp_path / "s.json", {"lr": math.inf, "loss": [1.0, math.nan], "ok": 2.5})
    append_jsonl(tmp_path / "m.jsonl", {"loss": -math.inf})
    # json.loads takes NaN / Infinity; a strict reader does not: parse_constant sees every such literal
    strict = {"parse_constant": lambda c: pytest.fail(f"non-JSON literal {c}")}
    assert json.loads((tmp_path / "s.json").read_text(), **strict) == {"lr": None, "loss": [1.0, None], "ok": 2.5}
    assert json.loads((tmp_path / "m.jsonl").read_text(), **strict) == {"loss": None}


def test_unreadable_references_score_nothing(ws):
    write(ws / "t.jsonl", "".join(json.dumps({"prompt": f"p{i}", "completion": f"not json {i}"}) + "\n"
                                  for i in range(3)))
    refused(ws, ["eval", "tiny", "--data", "t.jsonl", "--scorer", "json", "--max-new-tokens", "2", "--out", "ev"],
            2, ["json scorer", "all 3", "reference is not valid JSON"])
    assert not (ws / "ev").exists()


def test_some_unreadable_references_are_counted_not_perfect():
    from tunewise.tasks.scorers import aggregate, make_scorer

    for name, bad, good in (("json", "nope", '{"a": 1}'), ("mr", "nope", "inform(name[x])")):
        scorer = make_scorer(name)
        scored = [scorer.score(good, bad), scorer.score("???", good)]
        metrics = aggregate(scorer, scored, [bad, good])
        assert metrics["unscorable_references"] == 1
        assert metrics[scorer.primary] == 0.0  # the one readable reference was answered wrongly
        from tunewise.tasks.scorers import Scored

        nothing = aggregate(scorer, [Scored(False, "no prediction")], [good])  # not scored is not perfect
        assert nothing[scorer.primary] == 0.0


# ------------------------------------------------------------------------------------------- strict YAML


@pytest.mark.parametrize("text, needles", [
    (run_yaml("lora: {r: 4, r: 8}\n"), [":8:", "duplicate key 'r'", "line 8 column 14", "line 8 column 8"]),
    (run_yaml("train:\n  lr: 0.1\n"), [":8:", "duplicate key 'train'", "first given at line 5"]),
    (run_yaml().replace("data:\n", "data:\n  train: e.jsonl\n"), [":4:", "duplicate key 'train'", "line 3"]),
], ids=["flow-mapping", "section-twice", "nested-key"])
def test_duplicate_keys_name_both_lines(ws, text, needles):
    write(ws / "run.yaml", text)
    refused(ws, ["train", "run.yaml", "--out", "out"], 2, ["run.yaml", *needles])


def test_alias_bomb_in_a_valid_key_is_refused_before_validation(ws):
    write(ws / "run2.yaml", BOMB + run_yaml().replace("max_seq_len: 32", "max_seq_len: 32\n  columns: *g"))
    refused(ws, ["train", "run2.yaml", "--out", "out"], 2, ["run2.yaml", "expands to more than"])
    write(ws / "c.yaml", BOMB + "tasks: *g\nmethods: [{method: lora}]\n")
    refused(ws, ["continual", "c.yaml"], 2, ["c.yaml", "expands to more than"])


def test_merge_keys_may_still_be_overridden():
    from tunewise.userfiles import parse_yaml

    assert parse_yaml("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n", "f") == {"a": {"x": 1, "y": 2},
                                                                             "b": {"x": 3, "y": 2}}


# -------------------------------------------------------------------------------------- one writer per run


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_second_writer_is_refused_naming_the_holder(ws):
    import os
    import socket

    write(ws / "run.yaml", run_yaml())
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-01 00:00:00 UTC",
              "command": "tunewise train"}
    write(ws / "out" / ".lock", json.dumps(holder))
    out = refused(ws, ["train", "run.yaml", "--out", "out"], 2, ["'out'", "being written by", f"pid {os.getpid()}",
                                                                 socket.gethostname(), "since 2026-01-01"])
    assert "out/.lock" in out
    assert sorted(p.name for p in (ws / "out").iterdir()) == [".lock"]  # nothing written, not even the marker


def test_stale_lock_of_a_dead_process_is_taken_over_and_released(ws):
    import socket

    write(ws / "run.yaml", run_yaml())
    write(ws / "out" / ".lock", json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                           "since": "2026-01-01 00:00:00 UTC", "command": "tunewise train"}))
    code, out = run_cli(["train", "run.yaml", "--out", "out"])
    assert code == 0, out
    assert (ws / "out" / "summary.json").is_file() and not (ws / "out" / ".lock").exists()


def test_lock_is_released_when_the_run_fails(ws):
    from tunewise.config import load_run_config
    from tunewise.rundir import lock_holder
    from tunewise.train import train

    with pytest.raises(Exception):  # noqa: B017 -- any failure: the point is what it leaves behind
        train(load_run_config(write(ws / "ok.yaml", run_yaml())).model_copy(update={"base": "no/such-base"}), ws / "o")
    assert lock_holder(ws / "o") is None and not (ws / "o" / ".lock").exists()


def test_two_concurrent_trains_one_is_refused(ws):
    """A real second process trains into the folder; while it holds the lock, this one is refused."""
    import subprocess
    import sys
    import time

    from tunewise.rundir import lock_holder

    write(ws / "run.yaml", run_yaml().replace("max_steps: 1", "max_steps: 400"))
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "train", "run.yaml", "--out", "out"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # bounded: up to a minute for the other process to start and take the lock
            if lock_holder(ws / "out") is not None or proc.poll() is not None:
                break
            time.sleep(0.1)
        holder = lock_holder(ws / "out")
        assert holder is not None and holder.pid == proc.pid, proc.stderr.read().decode() if proc.poll() else ""
        code, out = run_cli(["train", "run.yaml", "--out", "out"])
        assert code == 2 and f"pid {proc.pid}" in out, out
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    assert not (ws / "out" / ".lock").exists()  # released on SIGTERM too


# ------------------------------------------------------------------------------ one overwrite rule (--force)


def _mine(ws: Path) -> Path:
    folder = ws / "mine"
    write(folder / "notes.txt", "my own notes\n")
    write(folder / "results.json", "{}\n")
    return folder


OVERWRITE_CASES = [
    ("data-fix-user-file", lambda ws: ["data", "check", "d.jsonl", "--model", "none", "--fix",
                                       write(ws / "clean.jsonl", "mine\n")], ["--fix", "clean.jsonl", "--force"]),
    ("advise-write-config-user-file", lambda ws: ["advise", "--json", "--task", "sql", "--model", "tiny",
                                                  "--device", "cpu", "--write-config",
                                                  write(ws / "my.yaml", "# mine\nbase: x\n")],
     ["--write-config", "my.yaml", "--force"]),
    ("eval-out-user-folder", lambda ws: ["eval", "tiny", "--data", "d.jsonl", "--out", _mine(ws)],
     ["--out", "mine", "tunewise did not write it"]),
    ("mitigate-into-a-run-adapter", lambda ws: ["analyze", "tiny", "x", "--mitigate", "0.5", "--out",
                                                _fake_adapter(ws / "other" / "adapter")],
     ["--out", "adapter", "tunewise did not write it"]),
    ("merge-into-user-folder", lambda ws: ["merge", "nope", "--out", _mine(ws)], ["--out", "mine", "--force"]),
    ("export-over-a-file", lambda ws: ["export", "nope", "--out", write(ws / "m.gguf", b"GGUF mine")],
     ["--out", "m.gguf", "--force"]),
]


def _fake_adapter(folder: Path) -> Path:
    write(folder / "adapter_config.json", "{}\n")
    write(folder / "adapter_model.safetensors", b"weights of another run")
    return folder


@pytest.mark.parametrize("make, needles", [c[1:] for c in OVERWRITE_CASES], ids=[c[0] for c in OVERWRITE_CASES])
def test_outputs_tunewise_did_not_write_are_refused(ws, make, needles):
    args = make(ws)
    refused(ws, args, 2, needles)


def test_force_and_own_outputs_are_replaced(ws):
    write(ws / "clean.jsonl", "mine\n")
    code, out = run_cli(["data", "check", "d.jsonl", "--model", "none", "--fix", "clean.jsonl", "--force"])
    assert code in (0, 1) and "mine" not in (ws / "clean.jsonl").read_text(), out
    args = ["advise", "--json", "--task", "sql", "--model", "tiny", "--device", "cpu", "--write-config", "a.yaml"]
    for _ in range(2):  # the second run replaces the config the first one wrote
        code, out = run_cli(args)
        assert code == 0, out
    from tunewise.config import load_run_config

    assert load_run_config(ws / "a.yaml").base == "tiny"  # the mark is a comment: train reads the file as it is


# ---------------------------------------------------------------------------------- runs know their inputs


@pytest.fixture
def stopped(ws):
    """A run stopped after its first checkpoint (resumable), in the case's folder."""
    from tunewise.config import load_run_config
    from tunewise.train import train

    write(ws / "run.yaml", run_yaml().replace("max_steps: 1", "max_steps: 2\n  save_every: 1"))
    train(load_run_config(ws / "run.yaml"), ws / "run", quiet=True, stop_at_step=1)
    assert (ws / "run" / "inputs.json").is_file()
    return ws / "run"


def test_resume_on_edited_data_is_refused_then_forced(ws, stopped):
    write(ws / "d.jsonl", (ws / "d.jsonl").read_text().replace("a1", "CHANGED"))
    refused(ws, ["train", "--resume", stopped], 2, ["inputs changed", "d.jsonl: its content changed",
                                                          "--force"])
    code, out = run_cli(["train", "--resume", stopped, "--force"])
    assert code == 0, out
    assert json.loads((stopped / "inputs.json").read_text())["changed_on_resume"] == ["d.jsonl: its content changed"]


def test_resume_with_data_path_changed_in_config_is_refused(ws, stopped):
    write(ws / "e.jsonl", (ws / "d.jsonl").read_text())
    cfg = stopped / "config.yaml"
    write(cfg, cfg.read_text().replace("train: d.jsonl", "train: e.jsonl"))
    refused(ws, ["train", "--resume", stopped], 2, ["data.train: 'd.jsonl' -> 'e.jsonl'"])


def test_adapter_on_another_base_is_refused_as_merge_refuses_it(ws, micro_llama_dir):
    from tunewise.config import load_run_config
    from tunewise.train import train

    write(ws / "run.yaml", run_yaml())
    train(load_run_config(ws / "run.yaml"), ws / "run", quiet=True)
    write(ws / "t.jsonl", json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    refused(ws, ["eval", "run", "--base", micro_llama_dir, "--data", "t.jsonl", "--out", "ev"], 2,
            ["'run' was trained on base 'tiny'", "--base", str(micro_llama_dir)])
    refused(ws, ["analyze", micro_llama_dir, "run"], 2, ["trained on base 'tiny'", "BASE"])
    refused(ws, ["merge", "run", "--base", micro_llama_dir, "--out", "merged"], 2, ["tiny"])
    assert not (ws / "ev").exists() and not (ws / "merged").exists()
    code, out = run_cli(["eval", "run", "--base", "tiny", "--data", "t.jsonl", "--max-new-tokens", "2"])
    assert code == 0, out  # its own base, named explicitly, is fine


# ------------------------------------------------------------------------- server: limits per client / request
# Against a real `python -m tunewise serve` on 127.0.0.1; every wait is a bounded loop.


@pytest.fixture(scope="module")
def words(tmp_path_factory, tiny_base_dir) -> dict[str, Path]:
    from fingerprint_adapters import make_fingerprint_adapter

    root = tmp_path_factory.mktemp("words")
    return {w: make_fingerprint_adapter(tiny_base_dir, root / w.lower(), w) for w in ("Oslo", "Lima")}


class Served:
    def __init__(self, tiny_base_dir: Path, *flags: str):
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("TUNEWISE_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--base", str(tiny_base_dir),
                                      "--port", str(self.port), "--dtype", "fp32", "--device", "cpu", *flags],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> Served:
        import time

        import httpx

        for _ in range(600):  # a hang guard, not a speed limit: startup imports torch on a busy machine
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.5)
        pytest.fail("serve did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=60)

    def post(self, path: str, body, timeout: float = 120):
        import httpx

        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.url + path, content=content, headers={"content-type": "application/json"},
                          timeout=timeout)


def _slow_body(port: int, sent: bytes = b'{"model": "tiny", "prom'):
    import socket

    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 200\r\n\r\n" + sent)
    return s


def test_slow_bodies_hold_no_slot_and_time_out(tiny_base_dir):
    import socket

    with Served(tiny_base_dir, "--max-concurrent", "2", "--body-timeout", "3") as srv:
        slow = [_slow_body(srv.port) for _ in range(8)]
        try:
            r = srv.post("/v1/completions", {"model": srv_base(srv), "prompt": "hi", "max_tokens": 1})
            assert r.status_code == 200, r.text  # 8 trickling clients do not use up 2 slots
            slow[0].settimeout(60)  # bounded: the deadline is 3 s
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = slow[0].recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply
            reply += slow[0].recv(4096)
            assert b"--body-timeout" in reply
        finally:
            for s in slow:
                s.close()
        with socket.create_connection(("127.0.0.1", srv.port)):
            pass  # still accepting


def srv_base(srv: Served) -> str:
    import httpx

    return httpx.get(srv.url + "/v1/models", timeout=30).json()["data"][0]["id"]


def test_rows_per_request_and_queued_rows_are_capped(tiny_base_dir):
    import threading
    import time

    import httpx

    with Served(tiny_base_dir, "--max-request-rows", "6", "--max-queued-rows", "6", "--max-tokens", "400") as srv:
        base = srv_base(srv)
        r = srv.post("/v1/completions", {"model": base, "prompt": ["a", "b", "c", "d"], "n": 2, "max_tokens": 1})
        assert r.status_code == 400 and "--max-request-rows" in r.text and "8 rows" in r.text, r.text
        r = srv.post("/v1/completions", {"model": base, "prompt": ["a"] * 1000, "max_tokens": 1})
        assert r.status_code == 400 and "1000 rows" in r.text
        # 6 long rows stream; meanwhile one more row is over the queue's limit
        started = threading.Event()

        def long_stream():
            body = {"model": base, "prompt": ["x"] * 6, "max_tokens": 300, "stream": True}
            with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=300) as resp:
                for _ in resp.iter_lines():
                    started.set()

        worker = threading.Thread(target=long_stream, daemon=True)
        worker.start()
        assert started.wait(300)
        r = srv.post("/v1/completions", {"model": base, "prompt": "y", "max_tokens": 1})
        assert r.status_code == 429 and "--max-queued-rows" in r.text, r.text
        worker.join(300)
        for _ in range(100):  # bounded: rows come back as their jobs finish
            r = srv.post("/v1/completions", {"model": base, "prompt": "y", "max_tokens": 1})
            if r.status_code != 429:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("raw, param", [(b'{"model": "M", "prompt": "a", "n": true}', "n"),
                                        (b'{"model": "M", "prompt": "a", "temperature": NaN}', "temperature"),
                                        (b'{"model": "M", "prompt": "a", "top_p": Infinity}', "top_p"),
                                        (b'{"model": "M", "prompt": "a", "logit_bias": {"5": NaN}}', "logit_bias")])
def test_server_numbers_follow_the_config_rule(tiny_base_dir, raw, param):
    from tunewise.serve.protocol import CompletionRequest

    with pytest.raises(Exception) as e:  # noqa: PT011 -- pydantic's ValidationError, checked by its field
        CompletionRequest.model_validate_json(raw.decode())
    assert param in str(e.value)


def test_server_numbers_refused_over_http(tiny_base_dir):
    with Served(tiny_base_dir) as srv:
        base = srv_base(srv)
        for raw, param in ((f'{{"model": "{base}", "prompt": "a", "n": true}}', "n"),
                           (f'{{"model": "{base}", "prompt": "a", "temperature": NaN}}', "temperature")):
            r = srv.post("/v1/completions", raw)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_adapter_reload_replaces_weights_or_is_refused(tiny_base_dir, words, tmp_path):
    import shutil

    from fingerprint_adapters import FINGERPRINT_PROMPT, fingerprint_of

    live = tmp_path / "live"
    shutil.copytree(words["Oslo"], live)
    with Served(tiny_base_dir, "--allow-runtime-paths") as srv:
        def ask() -> str | None:
            r = srv.post("/v1/completions", {"model": "fp", "prompt": FINGERPRINT_PROMPT, "max_tokens": 2})
            assert r.status_code == 200, r.text
            return fingerprint_of(r.json()["choices"][0]["text"])

        assert srv.post("/admin/adapters/load", {"name": "fp", "path": str(live)}).status_code == 200
        assert ask() == "Oslo"
        # another folder under the served name: refused, and the listing still shows what is served
        r = srv.post("/admin/adapters/load", {"name": "fp", "path": str(words["Lima"])})
        assert r.status_code == 409 and "forget" in r.text, r.text
        import httpx

        listing = httpx.get(srv.url + "/admin/adapters", timeout=30).json()
        assert listing["known"]["fp"]["path"] == str(live.resolve())
        assert ask() == "Oslo"
        # the same folder with new files: reloaded, so answers and listing agree
        for f in words["Lima"].iterdir():
            shutil.copy2(f, live / f.name)
        assert srv.post("/admin/adapters/load", {"name": "fp", "path": str(live)}).status_code == 200
        assert ask() == "Lima"
        # unload + forget, then the other folder under the name: allowed
        assert srv.post("/admin/adapters/unload", {"name": "fp", "forget": True}).status_code == 200
        assert srv.post("/admin/adapters/load", {"name": "fp", "path": str(words["Oslo"])}).status_code == 200
        assert ask() == "Oslo"


def test_run_records_resolved_config_and_resume_uses_it(ws, stopped):
    """config.yaml holds the lr the size defaults chose; a resume trains with what config.yaml records."""
    import yaml

    recorded = yaml.safe_load((stopped / "config.yaml").read_text())
    assert recorded["train"]["lr"] is not None and recorded["guards"]["lora_lr_limit"] is not None
    recorded["train"]["lr"] = 0.000123
    (stopped / "config.yaml").write_text(yaml.safe_dump(recorded))
    code, out = run_cli(["train", "--resume", stopped, "--json"])
    assert code == 0, out
    assert json.loads((stopped / "summary.json").read_text())["lr"] == 0.000123
