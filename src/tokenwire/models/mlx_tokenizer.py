"""The tokenizer and chat template of a GGUF file, built from its metadata alone.

``tokenizer.ggml.model = "gpt2"`` is a byte-level BPE: ``tokenizer.ggml.tokens``
is the vocabulary (ids are positions), ``tokenizer.ggml.merges`` the merge
rules in rank order, ``tokenizer.ggml.token_type`` marks control tokens (type 3,
``<|im_start|>``…), which a prompt may spell out and which never split.

The pre-tokenizer follows ``tokenizer.ggml.pre`` the way llama.cpp's
``llama-vocab.cpp`` does: for ``smollm`` (and the other StarCoder-style
vocabularies) every digit is its own piece, then the GPT-2 split applies.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from typing import Any

CONTROL = 3
# tokenizer.ggml.pre values whose pre-tokenizer splits digits one by one first.
_DIGIT_SPLIT = frozenset({"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva"})


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class GGUFTokenizer:
    """Encode text to ids and decode ids to text, as llama.cpp does for the same file."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"the MLX backend reads byte-level BPE tokenizers, not {kind!r}")
        tokens: Sequence[str] = list(meta["tokenizer.ggml.tokens"])
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        types = [int(t) for t in _list(meta.get("tokenizer.ggml.token_type"), len(tokens))]
        self.tokens = tokens
        self.control = frozenset(i for i, t in enumerate(types) if t == CONTROL)
        bpe = models.BPE(
            vocab={tok: i for i, tok in enumerate(tokens)},
            merges=merges,
            fuse_unk=False,
            byte_fallback=False,
        )
        tokenizer = Tokenizer(bpe)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if meta.get("tokenizer.ggml.pre") in _DIGIT_SPLIT:
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        else:
            tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([tokens[i] for i in sorted(self.control)])
        self._tok = tokenizer
        self.bos_id = _optional_id(meta, "tokenizer.ggml.bos_token_id")
        self.eos_id = _optional_id(meta, "tokenizer.ggml.eos_token_id")
        self.add_bos = bool(_scalar(meta.get("tokenizer.ggml.add_bos_token", False)))
        self.eog_ids = frozenset(
            i
            for i in (self.eos_id, _optional_id(meta, "tokenizer.ggml.eot_token_id"))
            if i is not None
        )
        self._bytes = _byte_decoder()

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_text(self, token: int) -> str:
        """The vocabulary entry (``Ġworld``), as the GGUF file stores it."""
        return self.tokens[token]

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """The ids of ``text``; control tokens spelt out in it are recognised."""
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        bos = self.add_bos if add_bos is None else add_bos
        if bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for (a control token: none, as llama.cpp
        detokenizes without special tokens)."""
        if token in self.control:
            return b""
        table = self._bytes
        return bytes(table[ch] for ch in self.tokens[token] if ch in table)

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", "replace")

    def stream_decoder(self) -> codecs.IncrementalDecoder:
        """An incremental UTF-8 decoder for token bytes (a character may span tokens)."""
        return codecs.getincrementaldecoder("utf-8")("replace")


def _list(value: Any, n: int) -> list[Any]:
    if value is None:
        return [1] * n
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _optional_id(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return None if value is None else int(_scalar(value))


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (``Ġ`` for a space), inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class ChatTemplate:
    """``tokenizer.chat_template`` (Jinja2, as llama.cpp and transformers render it)."""

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(template)
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], tokenizer: GGUFTokenizer) -> ChatTemplate:
        from tokenwire.models.llamacpp import _CHATML_TEMPLATE

        template = meta.get("tokenizer.chat_template") or _CHATML_TEMPLATE
        bos = tokenizer.tokens[tokenizer.bos_id] if tokenizer.bos_id is not None else ""
        eos = tokenizer.tokens[tokenizer.eos_id] if tokenizer.eos_id is not None else ""
        return cls(str(template), bos_token=bos, eos_token=eos)

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self._template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
