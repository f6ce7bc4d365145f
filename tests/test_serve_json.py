"""JSON mode (`response_format`) on a real loopback server, asked with the official openai client: every answer
of the tiny base is a JSON document that json.loads reads and that has the schema's required keys, streamed or
not, greedy or sampled; a format or schema the server cannot honour is a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from tunewise.generate.constrain import JsonGrammar, SchemaRefused, json_grammar

KEY = "json-key"
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
          "required": ["name", "age"], "additionalProperties": False}
PROMPTS = ["Give me a JSON object.", "Name and age of Ada Lovelace:", "hello"]


@pytest.fixture(scope="module")
def server(tiny_base_dir):
    from tunewise.serve.app import BackgroundServer, build_server, create_app
    from tunewise.serve.security import Limits

    srv = build_server(str(tiny_base_dir), dtype="fp32", device="cpu")
    with BackgroundServer(create_app(srv, Limits(api_key=KEY, max_tokens=200))) as bg:
        yield srv, bg.url
    srv.close()


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def person_ok(text: str) -> dict:
    doc = json.loads(text)
    assert set(PERSON["required"]) <= set(doc) <= set(PERSON["properties"]), doc
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 12 and 0 <= doc["age"] <= 150, doc
    return doc


def test_grammars_are_cached_per_tokenizer_and_schema(server):
    srv, _ = server
    first = json_grammar(srv.tokenizer, PERSON)
    assert isinstance(first, JsonGrammar) and json_grammar(srv.tokenizer, json.loads(json.dumps(PERSON))) is first
    a, b = first.start(), first.start()  # each row its own matcher: one advancing leaves the other at the start
    a.advance(int(a.allowed(srv.vocab_size).nonzero()[0]))
    assert not a.allowed(srv.vocab_size).equal(b.allowed(srv.vocab_size))
    with pytest.raises(SchemaRefused, match="objectx"):
        json_grammar(srv.tokenizer, {"type": "objectx"})


def test_json_object_and_json_schema_answers_parse(server):
    srv, url = server
    c = client(url)
    schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for prompt in PROMPTS:
        msgs = [{"role": "user", "content": prompt}]
        r = c.chat.completions.create(model=srv.base_name, messages=msgs, max_tokens=100,
                                      response_format={"type": "json_object"})
        assert isinstance(json.loads(r.choices[0].message.content), dict), r.choices[0].message.content
        r = c.chat.completions.create(model=srv.base_name, messages=msgs, max_tokens=100, response_format=schema,
                                      n=3, temperature=1.0, seed=7)
        assert [ch.finish_reason for ch in r.choices] == ["stop"] * 3
        for ch in r.choices:
            person_ok(ch.message.content)
    # the completions endpoint takes it too (as vLLM does): the openai client sends it as an extra field
    r = c.completions.create(model=srv.base_name, prompt="Person:", max_tokens=100,
                             extra_body={"response_format": schema})
    person_ok(r.choices[0].text)


def test_json_mode_streams(server):
    srv, url = server
    c = client(url)
    schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    msgs = [{"role": "user", "content": PROMPTS[1]}]
    whole = c.chat.completions.create(model=srv.base_name, messages=msgs, max_tokens=100, response_format=schema)
    chunks = list(c.chat.completions.create(model=srv.base_name, messages=msgs, max_tokens=100,
                                            response_format=schema, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) >= 3
    assert text == whole.choices[0].message.content
    person_ok(text)


@pytest.mark.parametrize("fmt,param", [
    ({"type": "grammar"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}},
     "response_format.json_schema.schema"),
])
def test_formats_it_cannot_honour_are_refused_by_name(server, fmt, param):
    import openai

    srv, url = server
    with pytest.raises(openai.BadRequestError) as e:
        client(url).chat.completions.create(model=srv.base_name, messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=5, response_format=fmt)
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param and param in err["message"], err
