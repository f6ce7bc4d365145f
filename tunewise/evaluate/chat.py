"""A conversation with a model, a run or an adapter, streamed through the generation engine.

A model with a chat template is asked the conversation so far as messages (the trainer's rule,
`formats.prompt_ids`); a plain model is asked the last message as text. Greedy by default, as eval asks it.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunewise.data.formats import prompt_ids
from tunewise.generate.run import stream_tokens


def templated(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def reply(loaded, messages: list[dict], max_new_tokens: int = 256) -> Iterator[str]:
    """The assistant's answer to `messages`, piece by piece as it is decoded."""
    prompt = messages if templated(loaded.tokenizer) else messages[-1]["content"]
    ids = prompt_ids(prompt, loaded.tokenizer)
    for delta in stream_tokens(loaded.model, loaded.tokenizer, ids, max_new_tokens):
        if delta.text:
            yield delta.text
