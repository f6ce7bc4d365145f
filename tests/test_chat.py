"""`tunewise chat` through the real CLI: the streamed answer is the engine's greedy answer, and a conversation
keeps its turns."""

from __future__ import annotations

from typer.testing import CliRunner

from tunewise.cli import app


def test_a_one_shot_answer_is_the_greedy_answer_eval_would_score():
    from tunewise.evaluate.generation import greedy_generate
    from tunewise.models import load_base

    prompt = "Q: What is 2 + 3? A:"
    res = CliRunner().invoke(app, ["chat", "tiny", "--prompt", prompt, "--max-new-tokens", "12"])
    assert res.exit_code == 0, res.output
    model, tok = load_base("tiny")
    expected = greedy_generate(model, tok, [prompt], max_new_tokens=12)[0]
    assert expected.strip() and res.output == expected + "\n"


def test_an_interactive_conversation_answers_each_turn_and_ends_on_an_empty_line():
    res = CliRunner().invoke(app, ["chat", "tiny", "--max-new-tokens", "6"], input="Q: 1 + 1? A:\nQ: 2 + 2? A:\n\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("you> ") == 3  # two questions answered, the third prompt met an empty line
    answers = [part.split("\n")[0] for part in res.output.split("you> ")[1:3]]
    assert all(a.strip() for a in answers)


def test_a_missing_target_is_one_clear_error(tmp_path):
    from tunewise.errors import TunewiseError

    res = CliRunner().invoke(app, ["chat", str(tmp_path / "nothing"), "--prompt", "hi"])
    assert isinstance(res.exception, TunewiseError) and "does not exist" in res.exception.message
