"""Loss masks, over-long handling and length-grouped batching, pinned against hand-made expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.data.formats import IGNORE, Record, load_examples, segments, tokenize_segments
from tunewise.errors import TunewiseError
from tunewise.train.batches import collate, epoch_batches


@pytest.fixture(scope="module")
def tok(tiny_base_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base_dir)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_prompt_completion_mask_is_exact(tok, tmp_path):
    path = tmp_path / "d.jsonl"
    segs = segments(Record({"prompt": "Q: 2 + 3 =", "completion": " 5"}, 1), "prompt_completion", tok, path)
    input_ids, labels = tokenize_segments(segs, tok)
    p, c = ids(tok, "Q: 2 + 3 ="), ids(tok, " 5")
    assert input_ids == p + c + [tok.eos_token_id]
    assert labels == [IGNORE] * len(p) + c + [tok.eos_token_id]


def test_chat_default_template_masks_all_but_assistant(tok, tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Ciao"}]
    input_ids, labels = tokenize_segments(segments(Record({"messages": msgs}, 1), "chat", tok, tmp_path), tok)
    expected_ids, expected_labels = [], []
    for text, trained in [("<|system|>\nBe brief.\n", False), ("<|user|>\nHi\n", False), ("<|assistant|>\n", False),
                          ("Hello<|endoftext|>", True), ("\n", False), ("<|user|>\nBye\n", False),
                          ("<|assistant|>\n", False), ("Ciao<|endoftext|>", True), ("\n", False)]:
        piece = ids(tok, text)
        expected_ids += piece
        expected_labels += piece if trained else [IGNORE] * len(piece)
    assert input_ids == expected_ids and labels == expected_labels
    trained_text = tok.decode([t for t in labels if t != IGNORE])
    assert trained_text == "Hello<|endoftext|>Ciao<|endoftext|>"


def test_text_records_train_on_everything(tok, tmp_path):
    input_ids, labels = tokenize_segments(segments(Record({"text": "abc"}, 1), "text", tok, tmp_path), tok)
    assert labels == input_ids == ids(tok, "abc") + [tok.eos_token_id]


def test_overlong_truncate_drop_error_and_unlearnable_are_counted(tok, tmp_path):
    rows = [{"prompt": "short", "completion": " yes"},
            {"prompt": "word " * 40, "completion": " long answer"},  # prompt alone fills max_seq_len: nothing to learn
            {"prompt": "a", "completion": " b" * 40}]  # long completion: truncation keeps some labels
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    ex, stats = load_examples(path, tok, max_seq_len=16, overlong="truncate")
    assert (stats.used, stats.truncated, stats.dropped_no_labels) == (2, 2, 1)
    assert all(len(e.input_ids) <= 16 for e in ex)
    ex, stats = load_examples(path, tok, max_seq_len=16, overlong="drop")
    assert (stats.used, stats.dropped_overlong) == (1, 2)
    with pytest.raises(TunewiseError, match=r"d.jsonl:2: .* tokens > data.max_seq_len 16"):
        load_examples(path, tok, max_seq_len=16, overlong="error")


def test_bad_record_names_file_line_and_field(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": " b"}, {"prompt": "a", "completion": 3}])
    with pytest.raises(TunewiseError, match=r"d.jsonl:2: completion: expected a string, got a int"):
        load_examples(path, tok)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": " b"}\n{not json\n')
    with pytest.raises(TunewiseError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples(tmp_path / "bad.jsonl", tok)


def test_csv_and_parquet_read_the_same(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"Q{i}:", "completion": f" {i}"} for i in range(5)]
    (tmp_path / "d.csv").write_text("prompt,completion\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    a = load_examples(write_jsonl(tmp_path / "d.jsonl", rows), tok)[0]
    b = load_examples(tmp_path / "d.csv", tok)[0]
    c = load_examples(tmp_path / "d.parquet", tok)[0]
    assert [e.input_ids for e in a] == [e.input_ids for e in b] == [e.input_ids for e in c]


def test_length_grouping_cuts_padding_and_is_deterministic():
    import random

    rng = random.Random(0)
    lengths = [rng.randrange(5, 200) for _ in range(1000)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = epoch_batches(lengths, 16, seed=1, epoch=0)
    plain = epoch_batches(lengths, 16, seed=1, epoch=0, group_by_length=False)
    assert padding(grouped) < 0.2 * padding(plain)
    assert grouped == epoch_batches(lengths, 16, seed=1, epoch=0)
    assert grouped != epoch_batches(lengths, 16, seed=1, epoch=1)
    assert sorted(i for b in grouped for i in b) == list(range(1000))  # every example once per epoch


def test_collate_masks_padding():
    from tunewise.data.formats import Example

    batch = collate([Example([5, 6, 7], [IGNORE, 6, 7], 1), Example([8], [8], 2)], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_serving_prompt_is_the_training_rendering_up_to_the_answer(tok, tmp_path):
    from tunewise.data.formats import chat_generation_prompt

    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    trained = "".join(text for text, _ in segments(Record({"messages": msgs}, 1), "chat", tok, tmp_path))
    prompt = chat_generation_prompt(msgs[:1], tok)
    assert trained.startswith(prompt) and trained[len(prompt):].startswith("Hello")


def test_plain_text_starts_with_the_bos_its_tokenizer_adds(tiny_base_dir):
    """One rule for every record shape and for generation prompts: a tokenizer that puts BOS first gets it."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from tunewise.data.formats import Record, encode_record, leading_special_ids, prompt_ids

    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    assert leading_special_ids(tok) == []  # the tiny base adds nothing
    bos = tok.eos_token_id  # stands in for a BOS token
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{tok.eos_token} $A",
                                                              special_tokens=[(tok.eos_token, bos)])
    tok._tunewise_leading_ids = None
    assert leading_special_ids(tok) == [bos]
    for record, fmt in (({"prompt": "Q: hi\nA:", "completion": " yes"}, "prompt_completion"),
                        ({"text": "hello there"}, "text"),
                        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
                         "chat")):
        ids, labels = encode_record(Record(record, 1), fmt, tok, Path("x.jsonl"))
        assert ids[0] == bos and labels[0] == -100, fmt
    prompt = prompt_ids("Q: hi\nA:", tok)
    ids, _ = encode_record(Record({"prompt": "Q: hi\nA:", "completion": " yes"}, 1), "prompt_completion", tok,
                           Path("x.jsonl"))
    assert prompt[0] == bos and ids[:len(prompt)] == prompt
    chat_prompt = prompt_ids([{"role": "user", "content": "hi"}], tok)
    assert chat_prompt[0] == bos  # no chat template here: the default rendering is plain text
