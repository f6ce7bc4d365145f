"""tunewise advise: the seed's 'Making the call' cases, the rules table, fallback, bad input, write-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tunewise.advise import AdviseInput, AdviseInputError, advise
from tunewise.advise.evidence import EVIDENCE
from tunewise.advise.rules import METHOD_ORDER, RULES, TASKS
from tunewise.config import validate_config


def _advise(**kw):
    return advise(AdviseInput(**kw))


# ---------------------------------------------------------------------------------------------- the seed's cases


def test_classification_7b_on_24gb_is_lora():
    a = _advise(task="classification", model="llama-2-7b", gpu_mem=24)
    assert a.method == "lora"
    assert any(r["rule"] == "representation-task" for r in a.reasons)
    assert not a.plans["full"].fits


def test_structured_output_13b_on_16gb_is_qlora():
    a = _advise(task="structured", model="llama-2-13b", gpu_mem=16)
    assert a.preferred == "lora" and a.method == "qlora"
    assert not a.plans["lora"].fits and a.plans["qlora"].fits
    assert any(r["rule"] == "memory-fit" for r in a.reasons)


def test_math_on_8x80gb_with_accuracy_priority_is_full():
    a = _advise(task="math", model="llama-2-7b", gpu_mem=80, gpus=8, accuracy_priority=True)
    assert a.method == "full"
    assert {"reasoning-task", "accuracy-priority"} <= {r["rule"] for r in a.reasons}


def test_continual_pipeline_is_full_or_a_loud_warning():
    big = _advise(task="sql", model="llama-2-7b", gpu_mem=80, gpus=8, continual=True)
    assert big.method == "full"
    small = _advise(task="sql", model="llama-2-7b", gpu_mem=80, continual=True)
    assert small.method == "lora"  # full does not fit on one card
    assert any(w.startswith("WARNING") and "intruder" in w for w in small.warnings)
    assert small.hyperparameters["alpha"]["value"] == 2 * small.hyperparameters["r"]["value"]


def test_several_runtime_swapped_adapters_is_lora():
    for task in ("classification", "math"):
        a = _advise(task=task, model="llama-2-7b", gpu_mem=80, gpus=8, multi_adapter=True)
        assert a.method == "lora", task


def test_training_time_bottleneck_is_not_qlora():
    kw = dict(task="classification", model="llama-2-7b", gpu_mem=40, quantized_inference=True, fast_iteration=True)
    assert _advise(**kw, time_bottleneck=True).method != "qlora"
    assert any(r["rule"] == "time-bottleneck" for r in _advise(**kw, time_bottleneck=True).counter_reasons
               + _advise(**kw, time_bottleneck=True).reasons)


def test_does_not_fit_anywhere():
    a = _advise(task="sql", model="llama-2-70b", gpu_mem=16)
    assert a.method is None and a.config is None
    assert a.decision.startswith("does not fit:") and "FSDP" in a.decision


# ---------------------------------------------------------------------------------------------- the table


def test_rules_table_is_well_formed():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    for r in RULES:
        assert r.evidence and all(e in EVIDENCE for e in r.evidence), r.id
        assert set(r.votes) <= set(METHOD_ORDER) and r.reason and r.condition


def test_hyperparameters_follow_the_seed():
    a = _advise(task="structured", model="qwen2.5-7b", gpu_mem=80)
    hp = a.hyperparameters
    assert hp["r"]["value"] in (16, 32) and hp["alpha"]["value"] in (hp["r"]["value"], 2 * hp["r"]["value"])
    assert hp["target_modules"]["value"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]
    assert hp["lr"]["value"] == 3e-5 and "1e-4" in hp["lr"]["reason"]
    assert hp["epochs"]["value"] <= 3 and "0.2" in hp["watch"]["reason"]
    assert [e["id"] for r in a.reasons for e in r["evidence"]]


def test_small_model_gets_a_higher_lr_with_the_reason(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128).save_pretrained(tmp_path)
    a = _advise(task="sql", model=str(tmp_path), device="cpu")
    assert a.method == "lora"
    # the same size default `compare` and `train` use (tunewise.defaults), with the reason it is not the seed's
    assert a.hyperparameters["lr"]["value"] == 5e-3 and "3e-5" in a.hyperparameters["lr"]["reason"]
    b = _advise(task="sql", model="smollm2", device="cpu")
    assert b.hyperparameters["lr"]["value"] == 1e-3 and "SmolLM2" in b.hyperparameters["lr"]["reason"]


# ---------------------------------------------------------------------------------------------- data and config


def _dataset(path, n, dup=0):
    rows = [{"prompt": f"Question {i}?\nSQL:", "completion": f" SELECT {i};"} for i in range(n)]
    rows += rows[:dup]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_data_advice_and_config(tmp_path):
    data = _dataset(tmp_path / "train.jsonl", 40, dup=3)
    a = _advise(task="sql", model="llama-2-7b", gpu_mem=80, dataset=str(data))
    assert a.data["records"] == 43 and a.data["duplicates"] == 3
    assert "1,000" in a.data["size"] and "preserve" in a.data
    cfg = validate_config(a.config)  # accepted unchanged
    assert cfg.method == "lora" and cfg.base == "meta-llama/Llama-2-7b-hf" and cfg.data.train == str(data)
    assert cfg.lora.target_modules == a.hyperparameters["target_modules"]["value"]
    assert cfg.train.lr == 3e-5 and cfg.train.epochs <= 3 and cfg.guards.overfit_loss == 0.2


def test_large_dataset_size_advice():
    a = _advise(task="classification", model="llama-2-7b", gpu_mem=80, data_size=80_000)
    assert "50,000" in a.data["size"] and a.hyperparameters["epochs"]["value"] == 1


# ---------------------------------------------------------------------------------------------- bad input


def test_all_input_problems_are_listed_together():
    with pytest.raises(AdviseInputError) as e:
        _advise(task="poetry", model="no-such-org/no-such-model", gpu_mem=-4, rank=0)
    msg = e.value.message
    assert "4 problem(s)" in msg
    assert "task: unknown 'poetry'" in msg and "gpu_mem: must be > 0" in msg and "rank: must be > 0" in msg
    assert "no-such-org/no-such-model" in msg


def test_task_aliases_and_suggestions():
    assert _advise(task="JSON", model="llama-2-7b", gpu_mem=80).inputs["task"] == "structured"
    with pytest.raises(AdviseInputError, match="did you mean 'classification'"):
        _advise(task="clasification", model="llama-2-7b", gpu_mem=80)
    assert set(TASKS) >= {"classification", "structured", "style", "domain", "sql", "code", "math", "logic",
                          "open-ended"}


def _cli(*args, stdin=subprocess.DEVNULL):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, env=env,
                          stdin=stdin, timeout=300)


def test_cli_bad_input_exits_nonzero_with_one_message():
    out = _cli("advise", "--task", "poetry", "--model", "llama-2-7b", "--gpu-mem", "-1", "--rank", "0")
    assert out.returncode == 2
    assert "3 problem(s)" in out.stderr and "Traceback" not in out.stderr


def test_cli_yaml_json_and_write_config(tmp_path):
    spec = tmp_path / "advise.yaml"
    spec.write_text("task: math\nmodel: llama-2-7b\ngpu_mem: 80\ngpus: 8\npriority: accuracy\n")
    cfg_path = tmp_path / "run.yaml"
    out = _cli("advise", "--from", str(spec), "--json", "--write-config", str(cfg_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["method"] == "full" and data["estimates"]["full"]["fits"]
    from tunewise.config import load_run_config

    assert load_run_config(cfg_path).method == "full"


def test_cli_yaml_unknown_key(tmp_path):
    spec = tmp_path / "advise.yaml"
    spec.write_text("task: math\nmodle: llama-2-7b\n")
    out = _cli("advise", "--from", str(spec), "--gpu-mem", "80")
    assert out.returncode == 2 and "did you mean 'model'" in out.stderr


@pytest.mark.slow
def test_written_config_trains_unchanged(tmp_path, micro_llama_dir):
    """advise --write-config on a real (micro) model, then `tunewise train` runs that file as written."""
    data = _dataset(tmp_path / "train.jsonl", 8)
    cfg_path = tmp_path / "run.yaml"
    out = _cli("advise", "--task", "sql", "--model", str(micro_llama_dir), "--device", "cpu", "--dataset",
               str(data), "--write-config", str(cfg_path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["method"] == "lora"
    run = _cli("train", str(cfg_path), "--out", str(tmp_path / "run"), "--quiet", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    written = yaml.safe_load(cfg_path.read_text())
    assert summary["method"] == written["method"] == "lora" and summary["status"] == "completed"
    assert summary["steps"] == summary["planned_steps"] >= 1  # every step the written config plans, no guard stop
    assert summary["lr"] == written["train"]["lr"] and 0 < summary["trainable_params"] < summary["total_params"]


def test_write_config_asks_for_fsdp_only_when_replicas_do_not_fit():
    from tunewise.config import validate_config

    a = _advise(task="code", model="llama-2-7b", gpu_mem=80, gpus=4, accuracy_priority=True, data_size=50000)
    assert a.method == "full" and a.config["train"]["distributed"] == "fsdp"
    assert "train.distributed: fsdp" in a.decision and a.as_dict()["estimates"]["full"]["distributed"] == "fsdp"
    assert validate_config(a.config).train.distributed == "fsdp"
    # LoRA fits on each GPU whole: plain DDP, no distributed key
    b = _advise(task="sql", model="llama-2-7b", gpu_mem=80, gpus=4)
    assert b.method == "lora" and "distributed" not in b.config["train"]


def test_advise_names_the_measurement_nearest_a_small_model_and_recommends_measuring():
    """On SmolLM2-135M the study's own math measurement is nearer than Anyscale's 7B/13B figure, and it does not
    confirm the rule: advise shows both and says to measure."""
    from tunewise.advise.engine import AdviseInput, advise

    a = advise(AdviseInput(task="math", model="smollm2", device="cpu")).as_dict()
    note = next(n for n in a["scale_notes"] if n["rule"] == "reasoning-task")
    assert note["nearest"] == "study-smollm2" and note["measured_call"] == "undecided"
    assert "math LoRA 0.485 ± 0.105 / full 0.468 ± 0.078" in note["text"] and "Llama 2 7B / 13B / 70B" in note["text"]
    assert "math: -1.7 points [-48.6, +45.3] on 600 examples" in note["text"]
    assert "the re-run (3 seeds x 200 test examples)" in note["text"]
    assert "tunewise pilot" in note["text"] and "compare --seeds 3" in note["text"]
    reason = next(r for r in a["reasons"] if r["rule"] == "reasoning-task")
    assert {e["id"]: e["params"] for e in reason["evidence"]}["anyscale-2023"] == [7e9, 13e9, 70e9]


def test_every_study_figure_advise_cites_is_the_claims_row_in_study_md():
    """advise's measured entries come from the study's report (study_measured.json), never typed by hand: each
    one's measured figure and band are the cells of its claim's summary row, in STUDY.md's summary (the ±5-point
    study) or in its first-pass section; a rule the study is undecided on says to measure, with `tunewise pilot`."""
    from pathlib import Path

    from tunewise.advise.engine import AdviseInput, advise
    from tunewise.advise.evidence import EVIDENCE
    from tunewise.advise.study_evidence import study_evidence

    page = (Path(__file__).resolve().parents[1] / "benchmarks" / "STUDY.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    study = study_evidence()
    assert {m.rule for m in study.measured} == {"representation-task", "sql-task", "reasoning-task",
                                                "continual-pipeline", "data-quality"}
    for m in study.measured:
        assert any(line.startswith(f"| {m.claim} | ") and f"| {m.measured} | {m.band} |" in line
                   and (not m.verdict or line.endswith(f"| {m.verdict} |")) for line in rows), m
    quality = next(m for m in study.measured if m.rule == "data-quality")
    line = advise(AdviseInput(task="structured", model="smollm2", device="cpu", data_size=5000)).data["quality"]
    assert quality.figure in line and quality.verdict in line
    assert EVIDENCE["study-smollm2"].finding == study.finding and EVIDENCE["study-smollm2"].params == (135e6,)
    for task, rule in (("structured", "representation-task"), ("sql", "sql-task"), ("math", "reasoning-task"),
                       ("structured", "continual-pipeline")):
        inp = AdviseInput(task=task, model="smollm2", device="cpu", continual=rule == "continual-pipeline")
        note = next(n for n in advise(inp).as_dict()["scale_notes"] if n["rule"] == rule)
        ours = next(m for m in study.measured if m.rule == rule)
        assert note["measured"] == ours.figure and note["measured_call"] == ours.call
        if ours.call != "holds":
            assert "tunewise pilot" in note["text"]


def test_continual_advice_on_a_small_model_cites_claim_7_not_the_intruder_mechanism():
    """At 135M the study's continual run (claim 7) is nearer than Shuttleworth et al.'s RoBERTa-base / 7B runs:
    LoRA forgot structured faster (beyond its band) with no intruder dimensions at any stage. The rule keeps its
    vote (the direction held), and the warning cites our forgetting figure instead of promising intruders; a 7B
    model keeps the published mechanism."""
    from tunewise.advise.engine import AdviseInput, advise

    small = advise(AdviseInput(task="structured", model="smollm2", device="cpu", continual=True,
                               multi_adapter=True)).as_dict()
    note = next(n for n in small["scale_notes"] if n["rule"] == "continual-pipeline")
    assert note["nearest"] == "study-smollm2" and note["measured_call"] == "holds" and not note["sets_aside"]
    assert "forgetting on structured, LoRA - full: +38.2 points [+28.6, +47.8] (LoRA forgot more)" in note["text"]
    assert "intruders per stage LoRA [0, 0, 0]" in note["text"] and "one seed" in note["text"]
    assert small["method"] == "lora"  # the swapped adapters outvote it, but the rule still votes for full
    assert any(r["rule"] == "continual-pipeline" and r.get("for") == "full" and r["weight"] == 3.0
               for r in small["counter_reasons"])
    warning = next(w for w in small["warnings"] if "continual pipeline" in w)
    assert "+38.2 points" in warning and "intruder dimensions accumulate" not in warning
    big = advise(AdviseInput(task="structured", model="llama-2-7b", device="cpu", continual=True,
                             multi_adapter=True)).as_dict()
    assert next(n for n in big["scale_notes"] if n["rule"] == "continual-pipeline")["nearest"] == "intruders-2024"
    assert any("intruder dimensions accumulate" in w for w in big["warnings"])


def test_advise_on_a_7b_model_still_cites_the_7b_evidence_as_nearest():
    from tunewise.advise.engine import AdviseInput, advise

    a = advise(AdviseInput(task="math", model="llama-2-7b", device="cpu")).as_dict()
    note = next(n for n in a["scale_notes"] if n["rule"] == "reasoning-task")
    assert note["nearest"] == "anyscale-2023" and "is farther" in note["text"]


def test_advise_takes_data_and_measures_sequence_length_in_tokens(tmp_path):
    """--data is the flag for the advice as for --pilot (the old --dataset still works, with a note); the sequence
    length is the longest example in the model's tokens, the count `data check` makes (one rule, audit_length)."""
    data = _dataset(tmp_path / "train.jsonl", 40)
    with data.open("a") as f:
        f.write(json.dumps({"prompt": "Question long?\nSQL:", "completion": " SELECT " + ", ".join(
            f"col{i}" for i in range(60)) + " FROM t;"}) + "\n")
    out = _cli("advise", "--task", "sql", "--model", "tiny", "--device", "cpu", "--data", str(data), "--json")
    assert out.returncode == 0, out.stderr
    advice = json.loads(out.stdout)
    check = _cli("data", "check", str(data), "--model", "tiny", "--json")
    longest = json.loads(check.stdout)["length"]["max"]
    assert longest > 100 and advice["config"]["data"]["max_seq_len"] == longest
    assert any(f"the longest example is {longest} tokens with tiny's tokenizer" in d
               for d in advice["automatic_decisions"])
    old = _cli("advise", "--task", "sql", "--model", "tiny", "--device", "cpu", "--dataset", str(data), "--json")
    assert old.returncode == 0 and json.loads(old.stdout)["config"] == advice["config"]
    assert "--dataset is now --data" in old.stderr
    # a preset is a config without a tokenizer here: characters, and the advice says why
    preset = _advise(task="sql", model="llama-2-7b", gpu_mem=80, dataset=str(data))
    assert any("characters" in d and "no tokenizer of" in d for d in preset.as_dict()["automatic_decisions"])


def test_a_rule_the_study_contradicts_at_the_users_scale_does_not_vote(monkeypatch):
    """Where our measurement is the evidence nearest the user's model and contradicts a rule (here: LoRA not behind
    full fine-tuning on reasoning at 135M), the rule's votes are set aside for that model and the note says so;
    a 7B model keeps the published rule."""
    import dataclasses

    from tunewise.advise import scale
    from tunewise.advise.engine import AdviseInput, advise

    ours = next(m for m in scale.measured() if m.rule == "reasoning-task")
    contradicted = dataclasses.replace(ours, call="contradicted")
    monkeypatch.setattr(scale, "measured", lambda: (contradicted,))
    small = advise(AdviseInput(task="math", model="smollm2", device="cpu")).as_dict()
    note = next(n for n in small["scale_notes"] if n["rule"] == "reasoning-task")
    assert note["sets_aside"] and "does not hold at this scale, so this rule does not vote" in note["text"]
    assert small["scores"]["full"] == 0.0 and small["preferred"] == "lora"
    shown = next(r for r in small["reasons"] if r["rule"] == "reasoning-task")
    assert shown["weight"] == 0.0 and shown["reason"].startswith("(set aside at your model's scale)")
    assert all(r["rule"] != "reasoning-task" for r in small["counter_reasons"])
    big = advise(AdviseInput(task="math", model="llama-2-7b", device="cpu")).as_dict()
    assert not next(n for n in big["scale_notes"] if n["rule"] == "reasoning-task")["sets_aside"]
    assert big["scores"]["full"] >= 2.0


def test_the_data_advice_cites_claim_11_once_measured(monkeypatch):
    """The data advice repeats LIMA's "quality beats quantity" (a 65B model); once the study measured it at 135M
    (claim 11, written into study_measured.json by --report) the advice adds that row's figure and verdict, and
    names `tunewise data select`; before, it adds nothing."""
    import dataclasses

    from tunewise.advise import scale
    from tunewise.advise.engine import AdviseInput, advise

    ours = scale.measured()[0]
    entry = dataclasses.replace(ours, rule="data-quality", claim=11, measured="structured lora noisy 5N 0.500 / "
                                "curated N 0.900 / random N 0.600", band="structured lora curated - noisy +40.0 "
                                "points [+30.0, +50.0] on 400 examples", call="holds", difference="",
                                verdict="lora curated beats noisy: yes on structured; noise hurts LoRA more: undecided")
    monkeypatch.setattr(scale, "measured", lambda: (entry,))
    after = advise(AdviseInput(task="structured", model="smollm2", device="cpu", data_size=5000)).as_dict()
    line = after["data"]["quality"]
    assert "measured at 135M" in line and "curated - noisy +40.0 points [+30.0, +50.0]" in line
    assert "noise hurts LoRA more: undecided" in line and "tunewise data select" in line
    # without the study's claim 11 row there is no measured line (the real file has one once --claims 11 ran)
    monkeypatch.setattr(scale, "measured", lambda: (ours,))
    assert "quality" not in advise(AdviseInput(task="structured", model="smollm2", device="cpu",
                                               data_size=5000)).as_dict()["data"]
