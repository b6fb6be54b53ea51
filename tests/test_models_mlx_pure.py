"""The MLX backend's parts: the GGUF tokenizer against llama.cpp's, the sampler,
the KV and prompt caches, and the device context generation runs in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.errors import TokenwireError
from tokenwire.models import mlx_llama
from tokenwire.models.base import Finish, GenerationRequest
from tokenwire.models.llamacpp import default_model_path
from tokenwire.models.mlx import MLXBackend, _PromptCache
from tokenwire.models.mlx_tokenizer import ChatTemplate, GGUFTokenizer
from tokenwire.models.registry import ModelURL, local_backend_from_url
from tokenwire.models.sampling import Sampler, SamplerSettings, candidates


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    _, metadata = mx.load(default_model_path(), return_metadata=True)
    return dict(metadata)


@pytest.fixture(scope="module")
def tokenizer(meta: dict[str, Any]) -> GGUFTokenizer:
    return GGUFTokenizer(meta)


@pytest.fixture(scope="module")
def vocab_only() -> Iterator[Any]:
    from llama_cpp import Llama

    llama = Llama(model_path=default_model_path(), vocab_only=True, verbose=False)
    yield llama
    llama.close()


TEXTS = [
    "Hello world",
    "12345 apples cost $3.50!",
    "  leading spaces\n\n\ttabs",
    "naïve café — 東京 🚀",
    "<|im_start|>user\nhi<|im_end|>\n",
    "don't I'll we've",
    "a\r\nb",
    "   ",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_equals_llamacpps_tokenize(
    tokenizer: GGUFTokenizer, vocab_only: Any, text: str
) -> None:
    ids = tokenizer.encode(text)
    assert ids == vocab_only.tokenize(text.encode(), add_bos=True, special=True)
    plain = text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert tokenizer.decode(ids) == plain  # control tokens detokenize to nothing, as there


# Text as people write it: letters, marks, numbers, punctuation, symbols, spaces. C1
# controls and unassigned code points may pre-tokenize differently: the Unicode
# tables of tokenizers' regex and of llama.cpp's own splitter are not the same.
WRITTEN = st.characters(categories=["L", "M", "N", "P", "S", "Zs"], max_codepoint=0x2FFFF)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=WRITTEN | st.sampled_from(["\n", "\t", " "]), max_size=40))
def test_any_written_text_tokenizes_as_llamacpp_does(
    tokenizer: GGUFTokenizer, vocab_only: Any, text: str
) -> None:
    if "<|" in text:
        return  # spelt-out control tokens are the parametrized case above
    ids = tokenizer.encode(text)
    assert ids == vocab_only.tokenize(text.encode(), add_bos=True, special=True)
    assert tokenizer.decode(ids) == vocab_only.detokenize(ids).decode("utf-8", "replace")


# SmolLM2's vocabulary has no token for a few bytes (some C0 controls, and the UTF-8
# lead bytes of U+40000 and up): text with them loses them, in llama.cpp too.
@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"], max_codepoint=0x3FFFF),
        max_size=40,
    )
)
def test_text_round_trips(tokenizer: GGUFTokenizer, text: str) -> None:
    if "<|" not in text:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_token_bytes_stream_decodes_a_character_split_across_tokens(
    tokenizer: GGUFTokenizer,
) -> None:
    ids = tokenizer.encode("🚀")
    assert len(ids) > 1  # four UTF-8 bytes, more than one token
    decoder = tokenizer.stream_decoder()
    parts = [decoder.decode(tokenizer.token_bytes(i)) for i in ids]
    assert parts[:-1] == [""] * (len(ids) - 1) and parts[-1] == "🚀"


def test_the_chat_template_comes_from_the_metadata(
    meta: dict[str, Any], tokenizer: GGUFTokenizer
) -> None:
    template = ChatTemplate.from_metadata(meta, tokenizer)
    text = template.render([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    custom = template.render([{"role": "system", "content": "Be brief."}])
    assert custom.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert tokenizer.eog_ids == {2} and tokenizer.add_bos is False


def test_the_config_comes_from_the_metadata(meta: dict[str, Any]) -> None:
    cfg = mlx_llama.LlamaConfig.from_metadata(meta)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (576, 30, 9, 3)
    assert (cfg.head_dim, cfg.rope_base, cfg.vocab_size) == (64, 100000.0, 49152)
    with pytest.raises(ValueError, match="llama"):
        mlx_llama.LlamaConfig.from_metadata({**meta, "general.architecture": "gpt2"})


# -- sampler ------------------------------------------------------------------

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.06, 0.04]))


def test_greedy_is_argmax() -> None:
    logits = np.array([0.1, 2.0, 2.0, -1.0])
    assert Sampler(SamplerSettings(temperature=0.0))(logits) == 1
    assert Sampler(SamplerSettings(temperature=1.0, top_k=1))(logits) == 1


def test_candidates_apply_top_k_top_p_and_min_p_in_order() -> None:
    def ids(**kw: Any) -> list[int]:
        return candidates(LOGITS, SamplerSettings(**kw)).tolist()

    off = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert ids(**off) == [0, 1, 2, 3, 4]
    assert ids(**{**off, "top_k": 2}) == [0, 1]
    assert ids(**{**off, "top_p": 0.7}) == [0, 1]  # 0.5 + 0.25 reaches 0.7
    assert ids(**{**off, "top_p": 0.75}) == [0, 1]
    assert ids(**{**off, "top_p": 0.76}) == [0, 1, 2]
    assert ids(**{**off, "top_p": 0.0}) == [0]  # at least one
    assert ids(**{**off, "min_p": 0.1}) == [0, 1, 2, 3]  # p >= 0.05
    assert ids(**{**off, "min_p": 1.0}) == [0]


def test_a_seed_repeats_its_draws_and_temperature_spreads_them() -> None:
    s = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a, b = Sampler(s, seed=7), Sampler(s, seed=7)
    draws = [a(LOGITS) for _ in range(2000)]
    assert draws == [b(LOGITS) for _ in range(2000)]
    counts = np.bincount(draws, minlength=5) / 2000
    assert abs(counts[0] - 0.5) < 0.1 and 0.0 < counts[4] < 0.12  # generous bounds
    cold = Sampler(SamplerSettings(temperature=0.05, top_k=0, top_p=1.0, min_p=0.0), seed=1)
    assert {cold(LOGITS) for _ in range(50)} == {0}


def test_bad_sampler_settings_are_refused() -> None:
    for kw in ({"temperature": -1.0}, {"top_p": 1.5}, {"top_k": -1}, {"min_p": 2.0}):
        with pytest.raises(ValueError):
            SamplerSettings(**kw)


# -- caches -------------------------------------------------------------------


def test_the_kv_cache_grows_in_steps_and_keeps_what_it_holds() -> None:
    cache = mlx_llama.KVCache(limit=600)
    k = mx.ones((1, 3, 200, 4))
    keys, _ = cache.update(k, k)
    assert keys.shape == (1, 3, 200, 4) and cache.keys is not None
    assert cache.keys.shape[2] == mlx_llama.KV_STEP
    keys, _ = cache.update(k * 2, k * 2)  # past the first step: grown, old rows kept
    assert cache.keys.shape[2] == 2 * mlx_llama.KV_STEP and keys.shape[2] == 400
    assert float(keys[0, 0, 199, 0]) == 1.0 and float(keys[0, 0, 200, 0]) == 2.0
    cache.trim(100)
    keys, _ = cache.update(k[:, :, :1] * 5, k[:, :, :1] * 5)
    assert keys.shape[2] == 101 and float(keys[0, 0, 100, 0]) == 5.0
    with pytest.raises(ValueError, match="600"):
        cache.update(mx.ones((1, 3, 500, 4)), mx.ones((1, 3, 500, 4)))


def test_the_prompt_cache_keeps_the_common_prefix_but_never_the_whole_prompt() -> None:
    caches = [mlx_llama.KVCache(64)]
    kv = _PromptCache(caches)
    caches[0].update(mx.ones((1, 1, 5, 2)), mx.ones((1, 1, 5, 2)))
    kv.tokens = [1, 2, 3, 4, 5]
    assert kv.reuse([1, 2, 3, 9], enabled=True) == 3
    assert kv.tokens == [1, 2, 3] and caches[0].offset == 3
    assert kv.reuse([1, 2, 3], enabled=True) == 2  # the last token must be evaluated
    assert kv.reuse([1, 2], enabled=False) == 0 and caches[0].offset == 0


# -- device context -------------------------------------------------------------


def _ask(n: int = 2) -> GenerationRequest:
    return GenerationRequest(
        model="m",
        messages=({"role": "user", "content": "Name a fruit."},),
        max_tokens=n,
        temperature=0.0,
    )


async def _collect(backend: MLXBackend, request: GenerationRequest) -> list[str | Finish]:
    return [item async for item in backend.generate(request)]


def test_generation_runs_in_a_stream_of_its_own_on_the_named_device() -> None:
    backend = MLXBackend(device=mx.new_stream(mx.cpu))  # a stream of this thread: its device
    before = mx.default_stream(mx.default_device())
    items = asyncio.run(_collect(backend, _ask()))
    assert items[:-1] == ["The", " fruit"] and isinstance(items[-1], Finish)
    assert backend.stream is not None and backend.stream.device == mx.cpu
    assert backend.stream != before
    assert mx.default_stream(mx.default_device()) == before  # ours is left alone
    assert [t for t in threading.enumerate() if t.name == "tokenwire-mlx-smollm2-mlx"]

    async def close_then_again() -> list[str | Finish]:
        await backend.aclose()  # ends the thread; the next request starts another
        return await _collect(backend, _ask(1))

    assert asyncio.run(close_then_again())[0] == "The"
    asyncio.run(backend.aclose())


def test_a_device_that_is_not_there_fails_the_request_clearly() -> None:
    backend = MLXBackend(device="gpu")  # no GPU on this machine (Metal or CUDA)
    if mx.is_available(mx.gpu):
        pytest.fail("this test expects a machine without an MLX GPU")
    with pytest.raises(TokenwireError, match="MLX device 'gpu'"):
        asyncio.run(_collect(backend, _ask()))


def test_the_url_names_the_device_and_the_settings() -> None:
    backend = local_backend_from_url("m", "mlx:?device=cpu&n_ctx=256&top_k=5&prefix_cache=no")
    assert isinstance(backend, MLXBackend)
    assert backend.device == "cpu" and backend.settings.n_ctx == 256
    assert backend.settings.top_k == 5 and backend.settings.prefix_cache is False
    assert ModelURL.parse("mlx:///x/y.gguf").target == "/x/y.gguf"
    missing = local_backend_from_url("m", "mlx:///nonexistent/model.gguf")
    with pytest.raises(TokenwireError, match="does not exist"):
        asyncio.run(_collect(missing, _ask()))  # type: ignore[arg-type]


def test_a_stop_during_a_long_prompt_lands_between_two_chunks() -> None:
    from tokenwire.models.mlx import PROMPT_CHUNK

    backend = MLXBackend(prefix_cache=False)
    long = GenerationRequest(
        model="m", messages=({"role": "user", "content": "lighthouse " * 200},), max_tokens=4
    )

    async def run() -> tuple[int, int]:
        await backend.load()
        pieces = backend.generate(long)
        first = asyncio.ensure_future(anext(pieces))
        await asyncio.sleep(0.5)  # inside the first chunks of ~220 prompt tokens
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await pieces.aclose()
        await backend.load()  # runs after the stopped generation on the same thread
        assert backend._loaded is not None
        prompt = backend._loaded.tokenizer.encode(backend._loaded.template.render(long.messages))
        return len(backend._loaded.kv.tokens), len(prompt)

    held, prompt = asyncio.run(run())
    assert held % PROMPT_CHUNK == 0 and 0 < held < prompt - PROMPT_CHUNK
