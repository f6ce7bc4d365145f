"""Hostile input across every command (issue 22): no traceback, the right exit code, a message that names the
file or flag, and every file that existed before the command byte-identical afterwards.

Each case runs `tunewise.cli.main` in-process (the same path as the console script) inside its own folder.
Most fail before a model loads; the few that need one use the shipped tiny base and one or two steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import socket
import traceback
from pathlib import Path

import pytest

# ----------------------------------------------------------------------------------------------- harness


def run_cli(args: list[str]) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `tunewise ARGS`; an exception escaping main is shown as its traceback."""
    from tunewise.cli import main

    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 -- a traceback is exactly what the test must see and fail on
            buf.write(traceback.format_exc())
            code = -1
    return code, buf.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


BINARY = bytes(range(256)) * 4
UTF16 = "base: tiny\ndata:\n  train: x.jsonl\n".encode("utf-16")


def run_config(task: Path, **extra) -> str:
    cfg = {"base": "tiny", "data": {"train": str(task / "train.jsonl"), "max_seq_len": 64},
           "train": {"max_steps": 2, "batch_size": 4, "save_every": 1, "device": "cpu"}}
    for key, value in extra.items():
        section, _, name = key.partition("__")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[section] = value
    return json.dumps(cfg)  # JSON is YAML


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A small task, a finished run and a run stopped after its first checkpoint (copied into each case)."""
    from tunewise.config import load_run_config
    from tunewise.tasks import make_task
    from tunewise.train import train

    root = tmp_path_factory.mktemp("hostile_shared")
    task = root / "task"
    make_task("structured", task, {"train": 8, "validation": 4, "test": 4}, 0)
    cfg_path = write(root / "run.yaml", run_config(task))
    cfg = load_run_config(cfg_path)
    train(cfg, root / "finished", quiet=True)
    train(cfg, root / "stopped", quiet=True, stop_at_step=1)
    return {"task": task, "config": cfg_path, "finished": root / "finished", "stopped": root / "stopped"}


@pytest.fixture
def ws(tmp_path, monkeypatch, shared):
    """A fresh working folder (the cwd) with copies of the shared task and runs."""
    work = tmp_path / "ws"
    work.mkdir()
    for name in ("task", "finished", "stopped"):
        shutil.copytree(shared[name], work / name)
    shutil.copy(shared["config"], work / "run.yaml")
    monkeypatch.chdir(work)
    return work


# --------------------------------------------------------------------------------------------------- cases
# Each case: (id, setup(ws) -> args, expected exit code, strings the output must hold).


def _user_folder(ws: Path) -> Path:
    folder = ws / "mine"
    write(folder / "config.yaml", "my own notes\n")
    write(folder / "data.csv", "a,b\n1,2\n")
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _ckpt(ws: Path) -> Path:
    return sorted((ws / "stopped" / "checkpoints").glob("step-*"))[-1]


CASES = [
    # --- train: the config file itself
    ("train-binary-config", lambda ws: ["train", write(ws / "bin.yaml", BINARY)], 2, ["bin.yaml", "UTF-8"]),
    ("train-utf16-config", lambda ws: ["train", write(ws / "u16.yaml", UTF16)], 2, ["u16.yaml", "UTF-16"]),
    ("train-broken-yaml", lambda ws: ["train", write(ws / "b.yaml", "base: tiny\ndata: [1,\n")], 2,
     ["b.yaml:", "not valid YAML"]),
    ("train-config-is-dir", lambda ws: ["train", ws / "task"], 2, ["is a directory"]),
    ("train-config-missing", lambda ws: ["train", ws / "nope.yaml"], 2, ["nope.yaml", "does not exist"]),
    ("train-config-list", lambda ws: ["train", write(ws / "l.yaml", "- 1\n- 2\n")], 2, ["l.yaml", "mapping"]),
    ("train-config-scalar", lambda ws: ["train", write(ws / "s.yaml", "42\n")], 2, ["s.yaml", "mapping"]),
    ("train-no-config", lambda ws: ["train"], 2, ["no config given"]),
    ("train-set-broken-yaml", lambda ws: ["train", "run.yaml", "--set", "lora.r=[1,"], 2, ["--set lora.r=[1,"]),
    ("train-set-no-equals", lambda ws: ["train", "run.yaml", "--set", "lora.r"], 2, ["--set", "key=value"]),
    ("train-set-not-section", lambda ws: ["train", "run.yaml", "--set", "base.x=1"], 2, ["base"]),
    ("train-set-bad-value", lambda ws: ["train", "run.yaml", "--set", "lora.r=-3"], 2, ["lora.r"]),
    ("train-set-unknown-key", lambda ws: ["train", "run.yaml", "--set", "lora.rank=8"], 2, ["did you mean"]),
    ("train-old-tensorboard-key", lambda ws: ["train", "run.yaml", "--set", "train.tensorboard=true"], 2,
     ["did you mean 'train.report_to'"]),
    ("train-data-missing", lambda ws: ["train", write(ws / "c.yaml", run_config(ws / "nowhere"))], 2,
     ["train.jsonl"]),
    ("train-data-binary", lambda ws: ["train", write(ws / "c.yaml", run_config(
        ws / "task", data={"train": str(write(ws / "bin.jsonl", BINARY))}))], 2, ["bin.jsonl"]),
    ("train-data-utf16", lambda ws: ["train", write(ws / "c.yaml", run_config(
        ws / "task", data={"train": str(write(ws / "u.jsonl", '{"prompt": "a", "completion": "b"}\n'
                                              .encode("utf-16")))}))], 2, ["u.jsonl"]),
    # --- train: values no model can take
    ("train-rank-1e23", lambda ws: ["train", "run.yaml", "--set", "lora.r=100000000000000000000000",
                                    "--out", ws / "r"], 2, ["lora.r"]),
    ("train-missing-targets", lambda ws: ["train", "run.yaml", "--set", "lora.target_modules=[nope_proj]",
                                          "--out", ws / "r"], 2, ["nope_proj", "lora.target_modules"]),
    # --- train: output folders
    ("train-out-is-file", lambda ws: ["train", "run.yaml", "--out", write(ws / "f.txt", "x")], 2,
     ["--out", "f.txt", "is a file"]),
    ("train-out-under-file", lambda ws: ["train", "run.yaml", "--out", write(ws / "f.txt", "x") / "sub"], 2,
     ["--out", "is a file"]),
    ("train-out-user-folder", lambda ws: ["train", "run.yaml", "--out", _user_folder(ws)], 2,
     ["--out", "mine", "did not write", "--force"]),
    ("train-out-existing-run", lambda ws: ["train", "run.yaml", "--out", ws / "finished"], 2,
     ["already holds a run", "--resume"]),
    ("train-output-dir-user-folder", lambda ws: ["train", write(ws / "c.yaml", run_config(
        ws / "task", output_dir=str(_user_folder(ws))))], 2, ["output_dir", "did not write"]),
    # --- train --resume
    ("resume-finished", lambda ws: ["train", "--resume", ws / "finished"], 0, ["complete", "nothing to resume"]),
    ("resume-finished-with-set", lambda ws: ["train", "--resume", ws / "finished", "--set", "lora.r=4"], 0,
     ["complete"]),
    ("resume-missing", lambda ws: ["train", "--resume", ws / "nope"], 2, ["nope", "does not exist"]),
    ("resume-file", lambda ws: ["train", "--resume", write(ws / "f.txt", "x")], 2, ["f.txt", "is a file"]),
    ("resume-not-a-run", lambda ws: ["train", "--resume", ws / "task"], 2, ["not a run directory"]),
    ("resume-with-out", lambda ws: ["train", "--resume", ws / "stopped", "--out", ws / "x"], 2, ["--out"]),
    ("resume-set-rank", lambda ws: ["train", "--resume", ws / "stopped", "--set", "lora.r=4"], 2,
     ["lora.r", "16 -> 4"]),
    ("resume-set-method", lambda ws: ["train", "--resume", ws / "stopped", "--set", "method=full"], 2,
     ["method"]),
    ("resume-set-targets", lambda ws: ["train", "--resume", ws / "stopped", "--set",
                                       "lora.target_modules=[q_proj]"], 2, ["lora.target_modules"]),
    ("resume-set-base", lambda ws: ["train", "--resume", ws / "stopped", "--set", "base=minilm"], 2, ["base"]),
    ("resume-truncated-weights", lambda ws: (_truncate(_ckpt(ws) / "trainable.safetensors"),
                                             ["train", "--resume", ws / "stopped"])[1], 2,
     ["step-0000001", "damaged"]),
    ("resume-random-optimizer", lambda ws: (write(_ckpt(ws) / "optimizer.pt", BINARY),
                                            ["train", "--resume", ws / "stopped"])[1], 2,
     ["step-0000001", "damaged"]),
    ("resume-damaged-summary", lambda ws: (write(ws / "finished" / "summary.json", "{not json"),
                                           ["train", "--resume", ws / "finished"])[1], 2, ["summary.json"]),
    ("resume-damaged-config", lambda ws: (write(ws / "stopped" / "config.yaml", BINARY),
                                          ["train", "--resume", ws / "stopped"])[1], 2, ["config.yaml", "UTF-8"]),
    # --- continual
    ("continual-binary", lambda ws: ["continual", write(ws / "c.yaml", BINARY)], 2, ["c.yaml", "UTF-8"]),
    ("continual-utf16", lambda ws: ["continual", write(ws / "c.yaml", "tasks: [a]\n".encode("utf-16"))], 2,
     ["c.yaml", "UTF-16"]),
    ("continual-broken-yaml", lambda ws: ["continual", write(ws / "c.yaml", "tasks: [sql,\n")], 2,
     ["c.yaml:", "not valid YAML"]),
    ("continual-list", lambda ws: ["continual", write(ws / "c.yaml", "- sql\n")], 2, ["c.yaml", "mapping"]),
    ("continual-dir", lambda ws: ["continual", ws / "task"], 2, ["is a directory"]),
    ("continual-missing", lambda ws: ["continual", ws / "none.yaml"], 2, ["does not exist"]),
    ("continual-bad-keys", lambda ws: ["continual", write(ws / "c.yaml", "tasks: [sql]\nmethodz: []\n")], 2,
     ["methodz"]),
    ("continual-empty", lambda ws: ["continual", write(ws / "c.yaml", "")], 2, ["c.yaml", "methods"]),
    ("continual-out-is-file", lambda ws: ["continual", write(ws / "c.yaml", "tasks: [sql, math]\nmethods: "
                                          f"[{{method: lora}}]\nout: {write(ws / 'f.txt', 'x')}\n")], 2,
     ["c.yaml: out", "is a file"]),
    # --- advise
    ("advise-from-broken", lambda ws: ["advise", "--json", "--from", write(ws / "a.yaml", "task: [\n")], 2,
     ["a.yaml:", "not valid YAML"]),
    ("advise-from-utf16", lambda ws: ["advise", "--json", "--from", write(ws / "a.yaml", "task: sql\n"
                                                                          .encode("utf-16"))], 2, ["UTF-16"]),
    ("advise-from-binary", lambda ws: ["advise", "--json", "--from", write(ws / "a.yaml", BINARY)], 2,
     ["a.yaml", "UTF-8"]),
    ("advise-from-dir", lambda ws: ["advise", "--json", "--from", ws / "task"], 2, ["is a directory"]),
    ("advise-from-nan-gpu", lambda ws: ["advise", "--json", "--from", write(
        ws / "a.yaml", "task: sql\nmodel: tiny\ngpu_mem: .nan\n")], 2, ["gpu_mem", "finite"]),
    ("advise-from-wrong-type", lambda ws: ["advise", "--json", "--from", write(
        ws / "a.yaml", "task: sql\nmodel: tiny\ngpus: many\n")], 2, ["gpus", "whole number"]),
    ("advise-gpu-mem-nan", lambda ws: ["advise", "--json", "--task", "sql", "--model", "tiny", "--gpu-mem", "nan"],
     2, ["--gpu-mem", "finite"]),
    ("advise-write-config-dir", lambda ws: ["advise", "--json", "--task", "sql", "--model", "tiny",
                                            "--write-config", ws / "task"], 2, ["--write-config", "directory"]),
    ("advise-write-config-under-file", lambda ws: ["advise", "--json", "--task", "sql", "--model", "tiny",
                                                   "--write-config", write(ws / "f", "x") / "c.yaml"], 2,
     ["--write-config"]),
    # --- pilot
    ("pilot-no-data", lambda ws: ["pilot", "--base", "tiny"], 2, ["--data: missing"]),
    ("pilot-bad-points", lambda ws: ["pilot", "--base", "tiny", "--data", ws / "task" / "train.jsonl", "--points",
                                     "8,x", "--methods", "lora,ful"], 2, ["--points", "ful"]),
    ("pilot-budget-nan", lambda ws: ["pilot", "--base", "tiny", "--data", ws / "task" / "train.jsonl", "--budget",
                                     "nan"], 2, ["--budget", "finite"]),
    # --- estimate
    ("estimate-rank-zero", lambda ws: ["estimate", "--model", "tiny", "--rank", "0"], 2, ["rank"]),
    ("estimate-seq-len-negative", lambda ws: ["estimate", "--model", "tiny", "--seq-len", "-5"], 2, ["seq"]),
    ("estimate-unknown-model", lambda ws: ["estimate", "--model", ws / "no-such-model"], 2, ["no-such-model"]),
    # --- tasks make
    ("tasks-unknown", lambda ws: ["tasks", "make", "poetry", "--out", ws / "t"], 2, ["poetry"]),
    ("tasks-huge-train", lambda ws: ["tasks", "make", "structured", "--out", ws / "t", "--train",
                                     "99999999999999999999"], 2, ["--train"]),
    ("tasks-negative-test", lambda ws: ["tasks", "make", "structured", "--out", ws / "t", "--test", "-1"], 2,
     ["--test"]),
    ("tasks-out-file", lambda ws: ["tasks", "make", "sql", "--out", write(ws / "f.txt", "x")], 2,
     ["--out", "is a file"]),
    ("tasks-user-folder", lambda ws: ["tasks", "make", "structured", "--out", _user_folder(ws)], 2,
     ["--out", "did not write"]),
    ("tasks-other-task", lambda ws: ["tasks", "make", "classify", "--out", ws / "task", "--train", "4"], 2,
     ["holds a task of structured", "--force"]),
    # --- data check
    ("data-missing", lambda ws: ["data", "check", ws / "none.jsonl", "--model", "none"], 2, ["none.jsonl"]),
    ("data-dir", lambda ws: ["data", "check", ws / "task", "--model", "none"], 2, ["task", "not a file"]),
    ("data-fix-is-input", lambda ws: ["data", "check", ws / "task" / "train.jsonl", "--model", "none", "--fix",
                                      ws / "task" / "train.jsonl"], 2, ["--fix", "input"]),
    ("data-fix-dir", lambda ws: ["data", "check", ws / "task" / "train.jsonl", "--model", "none", "--fix",
                                 ws / "task"], 2, ["--fix", "directory"]),
    ("data-fix-under-file", lambda ws: ["data", "check", ws / "task" / "train.jsonl", "--model", "none", "--fix",
                                        write(ws / "f", "x") / "clean.jsonl"], 2, ["--fix"]),
    ("data-binary-jsonl", lambda ws: ["data", "check", write(ws / "b.jsonl", BINARY), "--model", "none"], 2,
     ["b.jsonl"]),
    ("data-utf16", lambda ws: ["data", "check", write(ws / "u.jsonl", '{"prompt": "a", "completion": "b"}\n'
                                                      .encode("utf-16")), "--model", "none"], 2, ["u.jsonl"]),
    # --- eval
    ("eval-missing-target", lambda ws: ["eval", ws / "nope", "--data", ws / "task"], 2, ["nope"]),
    ("eval-bad-mode", lambda ws: ["eval", "tiny", "--data", ws / "task", "--mode", "guess"], 2, ["--mode"]),
    ("eval-out-file", lambda ws: ["eval", ws / "finished", "--out", write(ws / "f.txt", "x")], 2,
     ["--out", "is a file"]),
    ("eval-data-binary", lambda ws: ["eval", "tiny", "--data", write(ws / "b.jsonl", BINARY)], 2, ["b.jsonl"]),
    ("eval-damaged-adapter", lambda ws: (_truncate(ws / "finished" / "adapter" / "adapter_model.safetensors"),
                                         ["eval", ws / "finished", "--limit", "2"])[1], 2, ["damaged"]),
    ("eval-adapter-without-weights", lambda ws: ((ws / "finished" / "adapter" / "adapter_model.safetensors")
                                                 .unlink(), ["eval", ws / "finished" / "adapter", "--data",
                                                             ws / "task", "--limit", "2"])[1], 2, ["adapter"]),
    ("eval-huge-limit", lambda ws: ["eval", "tiny", "--task", "sql", "--limit", "100000000000000000000"], 2,
     ["--limit"]),
    ("eval-data-not-jsonl", lambda ws: ["eval", "tiny", "--data", write(ws / "notes.txt", "hello\n")], 2,
     ["notes.txt"]),
    # --- compare
    ("compare-huge-train-size", lambda ws: ["compare", "--train-size", "99999999999999999999"], 2,
     ["--train-size"]),
    ("compare-eval-size-zero", lambda ws: ["compare", "--eval-size", "0"], 2, ["--eval-size"]),
    ("compare-epochs-nan", lambda ws: ["compare", "--epochs", "nan"], 2, ["--epochs"]),
    ("compare-rank-huge", lambda ws: ["compare", "--rank", "100000000000000000000000"], 2, ["--rank"]),
    ("compare-methods-bogus", lambda ws: ["compare", "--methods", "lora,magic", "--out", ws / "c"], 2,
     ["--methods"]),
    ("compare-out-user-folder", lambda ws: ["compare", "--out", _user_folder(ws), "--methods", "lora"], 2,
     ["--out", "did not write"]),
    ("compare-out-other-task", lambda ws: (write(ws / "cmp" / ".tunewise", '{"kind": "compare", "for": "sql"}'),
                                           write(ws / "cmp" / "compare.json", "{}"),
                                           ["compare", "--task", "math", "--out", ws / "cmp"])[2], 2,
     ["holds a compare of sql", "--force"]),
    ("compare-out-file", lambda ws: ["compare", "--out", write(ws / "f.txt", "x")], 2, ["--out", "is a file"]),
    # --- report
    ("report-missing", lambda ws: ["report", ws / "nope"], 2, ["nope"]),
    ("report-compare-not-json", lambda ws: ["report", write(ws / "c" / "compare.json", "{oops").parent], 2,
     ["compare.json"]),
    ("report-compare-missing-keys", lambda ws: ["report", write(ws / "c" / "compare.json", '{"a": 1}').parent],
     2, ["compare.json"]),
    ("report-summary-not-json", lambda ws: (write(ws / "finished" / "summary.json", BINARY),
                                            ["report", ws / "finished"])[1], 2, ["summary.json"]),
    # --- merge
    ("merge-out-file", lambda ws: ["merge", ws / "finished", "--out", write(ws / "f.txt", "x")], 2,
     ["--out", "is a file"]),
    ("merge-missing-run", lambda ws: ["merge", ws / "nope", "--out", ws / "m"], 2, ["nope"]),
    ("merge-user-folder", lambda ws: ["merge", ws / "finished", "--out", _user_folder(ws)], 2, ["not empty"]),
    ("merge-damaged-adapter", lambda ws: (_truncate(ws / "finished" / "adapter" / "adapter_model.safetensors"),
                                          ["merge", ws / "finished", "--out", ws / "m"])[1], 2, ["adapter"]),
    # --- chat
    ("chat-missing-target", lambda ws: ["chat", ws / "nope", "--prompt", "hi"], 2, ["nope", "does not exist"]),
    ("chat-bad-step", lambda ws: ["chat", ws / "finished", "--step", "99", "--prompt", "hi"], 2, ["--step 99"]),
    ("chat-zero-tokens", lambda ws: ["chat", "tiny", "--max-new-tokens", "0", "--prompt", "hi"], 2,
     ["--max-new-tokens"]),
    ("chat-damaged-adapter", lambda ws: (_truncate(ws / "finished" / "adapter" / "adapter_model.safetensors"),
                                         ["chat", ws / "finished", "--prompt", "hi"])[1], 2, ["adapter"]),
    # --- export
    ("export-out-dir", lambda ws: ["export", "tiny", "--out", ws], 2, ["--out", "is a directory"]),
    ("export-not-gguf", lambda ws: ["export", "tiny", "--out", ws / "m.bin"], 2, ["--out", ".gguf"]),
    ("export-out-exists", lambda ws: ["export", "tiny", "--out", write(ws / "m.gguf", "x")], 2, ["exists", "--force"]),
    ("export-missing", lambda ws: ["export", ws / "nope", "--out", ws / "m.gguf"], 2, ["nope"]),
    ("export-bad-format", lambda ws: ["export", "tiny", "--format", "onnx", "--out", ws / "m.gguf"], 2, ["--format"]),
    ("export-bad-quant", lambda ws: ["export", "tiny", "--quant", "q4", "--out", ws / "m.gguf"], 2, ["--quant"]),
    ("export-lora-bad-quant", lambda ws: ["export", ws / "finished", "--format", "gguf-lora", "--quant", "q8_0",
                                          "--out", ws / "a.gguf"], 2, ["--quant"]),
    ("export-lora-of-a-model", lambda ws: ["export", "tiny", "--format", "gguf-lora", "--out", ws / "a.gguf"], 2,
     ["not an adapter"]),
    ("export-damaged-adapter", lambda ws: (_truncate(ws / "finished" / "adapter" / "adapter_model.safetensors"),
                                           ["export", ws / "finished", "--out", ws / "m.gguf"])[1], 2, ["adapter"]),
    # --- analyze
    ("analyze-missing", lambda ws: ["analyze", "tiny", ws / "nope"], 2, ["nope"]),
    ("analyze-bad-eps", lambda ws: ["analyze", "tiny", ws / "finished", "--eps", "abc"], 2, ["--eps"]),
    ("analyze-damaged-adapter", lambda ws: (_truncate(ws / "finished" / "adapter" / "adapter_model.safetensors"),
                                            ["analyze", "tiny", ws / "finished"])[1], 2, ["adapter"]),
    ("analyze-k-zero", lambda ws: ["analyze", "tiny", ws / "finished", "--k", "0"], 2, ["--k"]),
    # --- serve (all refused before a model loads)
    ("serve-port-zero", lambda ws: ["serve", "--port", "0"], 2, ["--port"]),
    ("serve-port-huge", lambda ws: ["serve", "--port", "70000"], 2, ["--port"]),
    ("serve-bad-adapter-spec", lambda ws: ["serve", "--adapter", "noequals"], 2, ["--adapter"]),
    ("serve-adapters-file", lambda ws: ["serve", "--adapters", write(ws / "f.txt", "x")], 2, ["--adapters"]),
    ("serve-bad-host", lambda ws: ["serve", "--host", "no-such-host.invalid", "--port", "8765"], 2, ["--host"]),
    ("serve-max-loaded-zero", lambda ws: ["serve", "--max-loaded", "0"], 2, ["--max-loaded"]),
    ("serve-max-tokens-zero", lambda ws: ["serve", "--max-tokens", "0"], 2, ["--max-tokens"]),
    # --- demo
    ("demo-huge-train-size", lambda ws: ["demo", "--train-size", "99999999999999999999"], 2, ["--train-size"]),
    ("demo-unknown-task", lambda ws: ["demo", "--task", "poetry"], 2, ["poetry"]),
]


@pytest.mark.parametrize("setup,code,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(ws, setup, code, needles):
    refused(ws, setup(ws), code, needles)


def refused(ws: Path, args: list, code: int, needles: list[str]) -> str:
    """Run the CLI on hostile input: no traceback, the exit code, every needle in the output, and every file that
    existed before byte-identical after; the output."""
    before = snapshot(ws)
    got, output = run_cli(args)
    assert "Traceback" not in output, output
    assert got == code, output
    for needle in needles:
        assert needle in output, (needle, output)
    after = snapshot(ws)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"pre-existing files changed: {changed}"
    return output


def test_enough_cases_over_every_command():
    from tunewise.cli import COMMAND_MODULES

    assert len(CASES) >= 60
    covered = {c[0].split("-")[0] for c in CASES}
    assert {"train", "resume", "continual", "advise", "estimate", "tasks", "data", "eval", "compare", "report",
            "merge", "analyze", "serve", "demo"} <= covered
    assert set(COMMAND_MODULES) - {"doctor"} <= covered | {"train"}


def test_serve_port_taken(ws):
    """The port is bound before the model loads, and a taken one is said plainly."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        code, output = run_cli(["serve", "--port", str(port)])
    assert code == 2 and "taken" in output and "--port" in output and "Traceback" not in output, output


def test_tasks_make_same_task_again_and_force(ws):
    """The rule lets tunewise rewrite its own folder, and --force is the way to replace another task."""
    code, output = run_cli(["tasks", "make", "structured", "--out", ws / "task", "--train", "4", "--validation",
                            "2", "--test", "2"])
    assert code == 0, output
    code, output = run_cli(["tasks", "make", "classify", "--out", ws / "task", "--train", "4", "--validation", "2",
                            "--test", "2", "--force"])
    assert code == 0, output
    assert json.loads((ws / "task" / "meta.json").read_text())["task"] == "classify"


def test_train_force_into_user_folder_keeps_other_files(ws):
    folder = _user_folder(ws)
    csv = (folder / "data.csv").read_bytes()
    code, output = run_cli(["train", "run.yaml", "--out", folder, "--force", "-q", "--set", "train.max_steps=1"])
    assert code == 0, output
    assert (folder / "data.csv").read_bytes() == csv and (folder / "summary.json").is_file()


def test_interrupt_during_training_exits_130(ws, monkeypatch):
    """Ctrl-C (SIGINT) during training: checkpoint saved, exit 130 -- not 0."""
    from tunewise.train.loop import Loop

    def interrupted(self):
        self.signal_received = "SIGINT"

    monkeypatch.setattr(Loop, "_install_signal_handlers", interrupted)
    code, output = run_cli(["train", "run.yaml", "--out", ws / "r", "-q"])
    assert code == 130, output
    assert json.loads((ws / "r" / "summary.json").read_text())["status"] == "interrupted"
    assert "Traceback" not in output


def test_advise_warns_about_seq_len_beyond_the_context(ws):
    code, output = run_cli(["advise", "--json", "--task", "sql", "--model", "tiny", "--device", "cpu",
                            "--seq-len", "1000000"])
    assert code in (0, 1) and "Traceback" not in output, output
    assert any("--seq-len 1000000" in w for w in json.loads(output)["warnings"]), output
