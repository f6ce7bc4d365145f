"""A Hugging Face byte-level BPE tokenizer as llama.cpp's tokenizer metadata (`tokenizer.ggml.*`, chat template).

llama.cpp tokenises in C++: the file carries the vocabulary, the merges, each token's type, the special token ids
and the name of a pre-tokenizer llama.cpp has built in (the regexes that cut text into words before BPE). The name
is read off tokenizer.json's structure, never guessed: a step that cannot change the result with this vocabulary is
dropped before matching (isolating each space when no merge joins a space to anything; splitting digits one by one
when no merge joins a digit to anything), and a structure llama.cpp has no pre-tokenizer for is refused.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

from transformers.convert_slow_tokenizer import bytes_to_unicode

from tunewise.errors import TunewiseError

# gguf.TokenType values (llama.cpp's llama_token_type), spelled out so this module needs no gguf import.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
GPT2_TOKENIZER = "gpt2"  # tokenizer.ggml.model for byte-level BPE
UNSUPPORTED_HINT = ("export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM2 and the tiny base use); "
                    "this one needs llama.cpp's own convert_hf_to_gguf.py")


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str  # llama.cpp pre-tokenizer name
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None

    def write(self, writer) -> None:
        """Add the tokenizer keys to a gguf.GGUFWriter."""
        writer.add_tokenizer_model(GPT2_TOKENIZER)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
                  "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
        for kind, token_id in self.special_ids.items():
            adders[kind](token_id)
        # Written explicitly: llama.cpp's defaults for these differ by pre-tokenizer.
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_add_space_prefix(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    """tokenizer.json stores merges as "a b" strings (older) or [a, b] pairs (tokenizers >= 0.20)."""
    pairs = []
    for m in model.get("merges") or []:
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        pairs.append((a, b))
    return pairs


def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _merged_texts(pairs: list[tuple[str, str]]) -> list[str]:
    """The text each merge produces (byte-level characters back to bytes, then UTF-8, dropping partial chars)."""
    dec = _byte_decoder()
    out = []
    for a, b in pairs:
        raw = bytes(dec[c] for c in a + b if c in dec)
        out.append(raw.decode("utf-8", errors="ignore"))
    return out


def _joins(texts: list[str], is_kind) -> bool:
    """Does any merge make a token holding a character of this kind together with any other character?"""
    return any(len(t) > 1 and any(is_kind(c) for c in t) for t in texts)


def _steps(pre: dict | None) -> list[dict]:
    if pre is None:
        return []
    return list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]


def pre_tokenizer_name(tokenizer_json: dict, clean_up_spaces: bool) -> str:
    """llama.cpp's name for what tokenizer.json's pre-tokenizer does with this vocabulary (see the module doc)."""
    pairs = _merge_pairs(tokenizer_json["model"])
    texts = _merged_texts(pairs)
    # Unicode category N, as \p{N} and the Digits step (Rust's is_numeric) mean it; str.isnumeric would also count
    # CJK numerals such as 一, which both treat as letters.
    digits_neutral = not _joins(texts, lambda c: unicodedata.category(c).startswith("N"))
    spaces_neutral = not _joins(texts, lambda c: c == " ")
    kinds = []
    for step in _steps(tokenizer_json.get("pre_tokenizer")):
        t = step.get("type")
        if t == "ByteLevel" and step.get("use_regex", True) and not step.get("add_prefix_space", False):
            kinds.append("bytelevel")
        elif t == "Digits" and step.get("individual_digits"):
            kinds.append("digits")
        elif (t == "Split" and step.get("pattern") == {"String": " "} and step.get("behavior") == "Isolated"
              and not step.get("invert")):
            kinds.append("spaces")
        else:
            raise TunewiseError(f"the tokenizer's pre-tokenizer step {json.dumps(step)[:160]} has no llama.cpp "
                                "equivalent that tunewise knows", UNSUPPORTED_HINT)
    if "spaces" in kinds:
        if not spaces_neutral:
            raise TunewiseError("the tokenizer isolates every space before BPE and its merges join spaces to "
                                "other characters; llama.cpp has no pre-tokenizer that does this", UNSUPPORTED_HINT)
        kinds.remove("spaces")  # no merge can see a space next to anything: isolating them changes nothing
    if kinds == ["bytelevel"] and digits_neutral:
        kinds = ["digits", "bytelevel"]  # digits never merge: splitting them is equally right
    if kinds == ["digits", "bytelevel"]:
        # Both read the same with a digit-neutral vocabulary; they differ in llama.cpp's space clean-up on decode.
        if digits_neutral and clean_up_spaces:
            return "gpt-2"
        return "smollm"  # StarCoder / SmolLM: digits one by one, then GPT-2's regex
    if kinds == ["bytelevel"]:
        return "gpt-2"
    raise TunewiseError(f"the tokenizer's pre-tokenizer ({' + '.join(kinds) or 'none'}) has no llama.cpp "
                        "equivalent that tunewise knows", UNSUPPORTED_HINT)


def build_vocab(tokenizer, vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of a fast byte-level BPE tokenizer, padded to the model's embedding rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TunewiseError(f"tokenizer {type(tokenizer).__name__} has no tokenizer.json (a slow tokenizer)",
                            UNSUPPORTED_HINT)
    tj = json.loads(backend.to_str())
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or (tj.get("decoder") or {}).get("type") != "ByteLevel":
        raise TunewiseError(f"the tokenizer is {model.get('type')} with a {(tj.get('decoder') or {}).get('type')} "
                            "decoder, not byte-level BPE", UNSUPPORTED_HINT)
    if tj.get("normalizer") is not None:
        raise TunewiseError("the tokenizer normalizes text before BPE, which llama.cpp's byte-level BPE does not",
                            UNSUPPORTED_HINT)
    if model.get("ignore_merges"):
        raise TunewiseError("the tokenizer looks whole words up before merging (ignore_merges), which "
                            "llama.cpp ties to pre-tokenizers tunewise does not write", UNSUPPORTED_HINT)
    pre = pre_tokenizer_name(tj, bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)))

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise TunewiseError(f"the tokenizer has token id {max(vocab.values())} but the model embeds only "
                            f"{vocab_size} tokens", "export the tokenizer saved with these weights")
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")  # embedding rows no token uses (llama.cpp's convention)
            types.append(UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(CONTROL if added[i].special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)

    special = {kind: getattr(tokenizer, f"{kind}_token_id") for kind in ("bos", "eos", "unk", "pad")}
    special = {k: v for k, v in special.items() if v is not None}
    probe = tokenizer("a")["input_ids"]
    template = tokenizer.chat_template
    if isinstance(template, dict):
        if "default" not in template:
            raise TunewiseError(f"the tokenizer has named chat templates {sorted(template)} and no default",
                                "keep one chat template (tokenizer.chat_template) before exporting")
        template = template["default"]
    return GGUFVocab(tokens=tokens, token_types=types, merges=[f"{a} {b}" for a, b in _merge_pairs(model)], pre=pre,
                     special_ids=special,
                     add_bos="bos" in special and probe[:1] == [special["bos"]],
                     add_eos="eos" in special and probe[-1:] == [special["eos"]] and len(probe) > 1,
                     chat_template=template or None)
