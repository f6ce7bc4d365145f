"""Fuzzing the data check: random and adversarial records never crash it, every bad line is reported with its
number, good lines are never called errors, and memory stays bounded (the file is streamed)."""

from __future__ import annotations

import json
import random
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewise.data.audit import AuditOptions, audit
from tunewise.data.schema import check_schema

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_word = st.text(alphabet="abcdefghij XYZ0123456789", min_size=1, max_size=20).filter(lambda s: s.strip())
_junk = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
                  st.lists(st.integers(), max_size=3), st.dictionaries(_text, st.integers(), max_size=2))


def _dump(obj) -> bytes:
    return json.dumps(obj).encode()


def _nested(depth: int) -> dict:
    obj: dict = {"a": 1}
    for _ in range(depth):
        obj = {"a": obj}
    return obj


# ("good" | "bad" | "blank", bytes without a newline)
good_line = st.one_of(
    st.builds(lambda p, c: _dump({"prompt": p + "\nA:", "completion": " " + c}), _text, _word),
    st.builds(lambda t: _dump({"text": t}), _word),
    st.builds(lambda u, a: _dump({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}),
              _word, _word),
    st.builds(lambda n: _dump({"prompt": "long\nA:", "completion": " " + "x" * n}), st.integers(10_000, 300_000)),
).map(lambda b: ("good", b))

bad_line = st.one_of(
    st.builds(lambda j: _dump({"prompt": j, "completion": " ok"}), _junk),  # wrong type
    st.builds(lambda j: _dump({"prompt": "p\nA:", "completion": j}), _junk),
    st.builds(lambda r: _dump({"messages": [{"role": r, "content": "x"}, {"role": "assistant", "content": "y"}]}),
              _word.filter(lambda r: r not in ("system", "user", "assistant"))),  # unknown role
    st.builds(lambda j: _dump({"messages": j}), _junk),
    st.builds(lambda d: _dump({"prompt": _nested(d), "completion": " y"}), st.integers(50, 400)),
    st.integers(1200, 50_000).map(lambda d: b"[" * d + b"]" * d),  # nesting past the parser's recursion limit
    st.builds(lambda b, i: b[:i] + b"\x00" + b[i:], st.just(_dump({"text": "abc"})), st.integers(0, 14)),  # raw NUL
    st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]).map(
        lambda bad: b'{"text": "ab' + bad + b'cd"}'),  # invalid UTF-8
    st.sampled_from([b"{", b"}", b"nul", b'{"text": "x"', b"[1, 2", b'"just a string"', b"42", b"null",
                     b'{"text": "\\ud800"}', b'{"text": "a\\u0000"}', b"1" * 5000]),
    st.builds(lambda t: _dump({"prompt": "p\nA:", "completion": t}), st.sampled_from(["", " ", "\t\n "])),
    st.builds(lambda k: _dump({k: "value"}), _word.filter(lambda k: k not in ("prompt", "completion", "text"))),
).map(lambda b: ("bad", b))

blank_line = st.sampled_from([b"", b"   ", b"\t"]).map(lambda b: ("blank", b))
any_line = st.one_of(good_line, bad_line, blank_line, good_line, bad_line)


def _write(tmp_path, lines: list[tuple[str, bytes]], trailing_newline: bool):
    path = tmp_path / "fuzz.jsonl"
    data = b"\n".join(b for _, b in lines) + (b"\n" if trailing_newline and lines else b"")
    path.write_bytes(data)
    return path


@SETTINGS
@given(lines=st.lists(any_line, max_size=60), trailing_newline=st.booleans())
def test_every_bad_line_reported_and_no_good_line_is_an_error(tmp_path_factory, lines, trailing_newline):
    path = _write(tmp_path_factory.mktemp("fz"), lines, trailing_newline)
    problems = check_schema(path, max_problems=100_000)
    error_lines = {p.line for p in problems if p.severity == "error"}
    bad = {i + 1 for i, (kind, _) in enumerate(lines) if kind == "bad"}
    assert error_lines - {0} == bad
    if not any(kind != "blank" for kind, _ in lines):
        assert [p.code for p in problems] == ["empty-file"]
    for p in problems:
        assert str(p).startswith(f"{path}:{p.line}: " if p.line else f"{path}: ")
        assert p.field or p.code == "empty-file"
    report = audit(path, AuditOptions(model=None, max_problems=100_000))
    assert report["records"]["invalid"] == len(bad)
    assert report["records"]["valid"] == sum(kind == "good" for kind, _ in lines)
    assert report["exit_code"] == (2 if bad or report["records"]["valid"] == 0 else report["exit_code"])


@SETTINGS
@given(raw=st.lists(st.binary(max_size=300), max_size=40))
def test_random_bytes_never_crash(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fzb") / "raw.jsonl"
    path.write_bytes(b"\n".join(raw))
    n_lines = len(path.read_bytes().split(b"\n"))
    problems = check_schema(path, max_problems=100_000)
    assert all(0 <= p.line <= n_lines for p in problems)
    audit(path, AuditOptions(model=None))


def _adversarial(rng: random.Random) -> tuple[str, bytes]:
    """One tagged line drawn with plain `random` (for a single big file; @given draws the small ones)."""
    kind = rng.randrange(12)
    s = "".join(rng.choice("ab c\u00e9\u4e2d\U0001f600\"\\") for _ in range(rng.randrange(1, 30)))
    if kind == 0:
        return "good", _dump({"prompt": s + "\nA:", "completion": " x" + s})
    if kind == 1:
        return "good", _dump({"messages": [{"role": "system", "content": s}, {"role": "user", "content": "q"},
                                           {"role": "assistant", "content": "a" + s}]})
    if kind == 2:
        return "good", _dump({"text": "t" + s * rng.randrange(1, 2000)})
    if kind == 3:
        return "blank", b" " * rng.randrange(3)
    if kind == 4:
        return "bad", _dump({"prompt": rng.choice([None, 1, 2.5, [s], {"s": s}, True]), "completion": " c"})
    if kind == 5:
        return "bad", _dump({"prompt": "p", "completion": s})[: rng.randrange(1, 10)]  # cut short
    if kind == 6:
        d = rng.randrange(1100, 20_000)
        return "bad", rng.choice([b"[" * d + b"]" * d, b'{"a":' * d + b"1" + b"}" * d])
    if kind == 7:
        raw = bytearray(_dump({"text": s}))
        raw.insert(rng.randrange(len(raw) + 1), 0)
        return "bad", bytes(raw)
    if kind == 8:
        return "bad", b'{"text": "' + bytes([rng.randrange(0x80, 0x100)]) + b'"}' if rng.random() < 0.5 \
            else b'{"text": "ok' + rng.choice([b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]) + b'"}'
    if kind == 9:
        return "bad", _dump({"messages": [{"role": "robot" + s, "content": "x"}]})
    if kind == 10:
        return "bad", _dump({"messages": [{"role": "user", "content": s}]})  # no assistant turn
    return "bad", _dump(rng.choice([[s], s, 3, None, {"unknown": s}]))


def test_thousands_of_adversarial_records_at_once(tmp_path):
    """One file of 3000 lines of every kind: each bad line is reported by number, no good line is an error."""
    rng = random.Random(0)
    lines = [_adversarial(rng) for _ in range(3000)]
    path = _write(tmp_path, lines, trailing_newline=False)
    problems = check_schema(path, max_problems=100_000)
    bad = {i + 1 for i, (kind, _) in enumerate(lines) if kind == "bad"}
    assert {p.line for p in problems if p.severity == "error"} == bad
    capped = check_schema(path, max_problems=50)
    assert len(capped) == 51 and capped[-1].code == "more"
    report = audit(path, AuditOptions(model=None))
    assert report["records"]["invalid"] == len(bad) and report["exit_code"] == 2


def test_memory_is_bounded_by_a_line_not_the_file(tmp_path):
    """20k records (~20 MB) and one 8 MB line: the check's peak allocation stays a small multiple of a line."""
    path = tmp_path / "big.jsonl"
    rec = _dump({"prompt": "q" * 500 + "\nA:", "completion": " " + "a" * 500}) + b"\n"
    with open(path, "wb") as f:
        for _ in range(20_000):
            f.write(rec)
        f.write(_dump({"text": "z" * 8_000_000}) + b"\n")
    tracemalloc.start()
    problems = check_schema(path, max_line_bytes=1_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(p.line, p.code) for p in problems] == [(20_001, "line-too-long")]
    assert peak < 6_000_000, peak  # the file is 28 MB
