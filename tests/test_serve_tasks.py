"""`tunewise serve` with adapters that `tunewise train` made on two different built-in tasks: the official openai
client gets, from each, the same greedy answers that adapter gives offline."""

from __future__ import annotations

import pytest

from tunewise.config import validate_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def task_adapters(tmp_path_factory, tiny_base_dir):
    from tunewise.tasks import make_task
    from tunewise.train import train

    root = tmp_path_factory.mktemp("task-adapters")
    runs = {}
    for task in ("structured", "sql"):
        make_task(task, root / "data" / task, {"train": 48, "validation": 0, "test": 4}, seed=0)
        cfg = validate_config({"base": str(tiny_base_dir), "method": "lora",
                               "data": {"train": str(root / "data" / task / "train.jsonl"), "max_seq_len": 128},
                               "lora": {"r": 8}, "train": {"max_steps": 8, "batch_size": 8, "lr": 5e-3}})
        runs[task] = train(cfg, root / "runs" / task, quiet=True).run_dir
    return root, runs


def test_openai_client_serves_task_adapters_like_offline(task_adapters, tiny_base_dir):
    from openai import OpenAI

    from tunewise.evaluate.generation import greedy_generate
    from tunewise.evaluate.runner import read_items
    from tunewise.models import load_base, load_tuned
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    root, runs = task_adapters
    prompts = [it.prompt for task in runs for it in read_items(root / "data" / task / "test.jsonl")][:6]
    model, tok = load_base(str(tiny_base_dir))
    offline = {"base": greedy_generate(model, tok, prompts, max_new_tokens=12)}
    for task, run in runs.items():
        model, tok = load_tuned(run)
        offline[task] = greedy_generate(model, tok, prompts, max_new_tokens=12)
    assert offline["structured"] != offline["sql"]  # the two adapters really differ

    srv = build_server(str(tiny_base_dir), adapters={t: r for t, r in runs.items()}, dtype="fp32", device="cpu",
                       base_name="base")
    try:
        with BackgroundServer(create_app(srv, Limits(api_key="k"))) as bg:
            client = OpenAI(base_url=f"{bg.url}/v1", api_key="k", max_retries=0, timeout=120)
            assert {m.id for m in client.models.list().data} >= {"base", "structured", "sql"}
            for model_id in ("base", "structured", "sql"):
                got = [client.completions.create(model=model_id, prompt=p, max_tokens=12).choices[0].text
                       for p in prompts]
                assert got == offline[model_id], model_id
    finally:
        srv.close()
