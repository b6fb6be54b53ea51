"""One exception tree: every tokenwire exception derives from ``TokenwireError``,
is named ``…Error`` and is drawn in ``tokenwire.errors``'s docstring."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import re

import pytest

import tokenwire
from tokenwire import errors
from tokenwire.client import errors as client_errors
from tokenwire.models import errors as model_errors
from tokenwire.tensors import errors as tensor_errors

# Named before the rule, in a module being written now (the Redis broker); it
# still derives from the root and is drawn.
LEGACY_NAMES = {"BrokerUnavailable"}


def exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(tokenwire.__path__, "tokenwire."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not obj.__name__.startswith("_")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_walk_finds_every_branch() -> None:
    found = exception_classes()
    assert len(found) >= 60
    for name in (
        "tokenwire.client.errors.HeartbeatTimeoutError",
        "tokenwire.tensors.errors.TensorChecksumError",
        "tokenwire.server.tokens.TokenExpiredError",
        "tokenwire.sse.SSEProtocolError",
    ):
        assert name in found


def test_every_exception_derives_from_the_one_root() -> None:
    outside = [
        name
        for name, cls in exception_classes().items()
        if not issubclass(cls, errors.TokenwireError)
    ]
    assert outside == []


def test_every_exception_is_named_error() -> None:
    badly_named = [
        name
        for name, cls in exception_classes().items()
        if not cls.__name__.endswith("Error") and cls.__name__ not in LEGACY_NAMES
    ]
    assert badly_named == []


def test_the_docstring_draws_every_exception() -> None:
    drawn = set(re.findall(r"\b[A-Z]\w+", errors.__doc__ or ""))
    missing = sorted({cls.__name__ for cls in exception_classes().values()} - drawn)
    assert missing == []


def test_the_client_404_and_429_are_the_server_errors_of_the_same_name() -> None:
    not_found = client_errors.status_error(404, "not_found", "gone", stream_id="st_x")
    assert isinstance(not_found, client_errors.StreamNotFoundError)
    assert isinstance(not_found, errors.StreamNotFoundError)
    assert isinstance(not_found, client_errors.HTTPStatusError)
    assert (not_found.stream_id, not_found.status, not_found.code) == ("st_x", 404, "not_found")
    limited = client_errors.code_error("too_many_streams", "full")
    assert isinstance(limited, errors.LimitExceededError)
    assert limited.retryable
    assert limited.to_dict() == {"error": {"code": "too_many_streams", "message": "full"}}
    with pytest.raises(errors.StreamNotFoundError):
        raise not_found


@pytest.mark.parametrize(
    "err",
    [
        errors.StreamNotFoundError("st_1"),
        errors.LimitExceededError("too_many_streams", "at most 3"),
        model_errors.ModelStartFailedError("m", 12, "exited", error="boom", stderr_tail=("x",)),
        tensor_errors.TensorChunkError("t1", "index 9 out of range"),
        client_errors.StreamGapError("st_1", 4, 9),
        client_errors.status_error(404, "not_found", "gone", stream_id="st_1", last_seq=3),
        client_errors.ReconnectExhaustedError(3, client_errors.ConnectError("refused")),
    ],
    ids=lambda err: type(err).__name__,
)
def test_errors_pickle_with_their_fields(err: errors.TokenwireError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.to_dict() == err.to_dict()
    assert vars(back) == vars(err) or type(err) is client_errors.ReconnectExhaustedError


def test_parser_errors_are_still_value_errors() -> None:
    from tokenwire.ndjson import NDJSONParser, NDJSONProtocolError
    from tokenwire.sse import SSEProtocolError

    assert issubclass(SSEProtocolError, ValueError)
    with pytest.raises(ValueError):
        NDJSONParser().feed(b"{not json}\n")
    with pytest.raises(errors.TokenwireError) as caught:
        NDJSONParser().feed(b"{not json}\n")
    assert isinstance(caught.value, NDJSONProtocolError)


def test_mlx_unavailable_is_an_import_error_and_a_tokenwire_error() -> None:
    from tokenwire.mlx_context import MLXUnavailableError

    assert issubclass(MLXUnavailableError, ImportError)
    assert issubclass(MLXUnavailableError, errors.TokenwireError)


def test_the_old_names_still_import() -> None:
    from tokenwire import StreamNotFound
    from tokenwire.models import ModelBusy
    from tokenwire.server.access import Forbidden

    assert StreamNotFound is errors.StreamNotFoundError
    assert ModelBusy is model_errors.ModelBusyError
    assert Forbidden.__name__ == "ForbiddenError"


def test_the_js_client_uses_the_python_names() -> None:
    from pathlib import Path

    source = (Path(__file__).parent.parent / "clients/js/src/errors.js").read_text()
    js_classes = set(re.findall(r"^export class (\w+)", source, re.M))
    python_names = {cls.__name__ for cls in exception_classes().values()}
    assert len(js_classes) >= 15
    assert sorted(js_classes - python_names) == []
    # The Python client's HTTP branch, all of it, exists in JS too.
    http_branch = {
        cls.__name__
        for cls in vars(client_errors).values()
        if inspect.isclass(cls) and issubclass(cls, client_errors.HTTPStatusError)
    }
    assert sorted(http_branch - js_classes) == []
