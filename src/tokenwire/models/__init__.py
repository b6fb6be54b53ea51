"""Model backends: the protocol, the registry and the built-in backends.

The backends that need optional heavy imports (llama-cpp, httpx) are imported
lazily by the registry; import them from their modules:
``tokenwire.models.llamacpp.LlamaCppBackend``, ``tokenwire.models.openai.OpenAIBackend``,
``tokenwire.models.ollama.OllamaBackend``.
"""

from tokenwire.models.base import Finish, GenerationRequest, ModelBackend, Usage
from tokenwire.models.errors import ContextLengthExceeded as ContextLengthExceeded
from tokenwire.models.errors import (
    ContextLengthExceededError,
    ModelBusyError,
    ModelError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamUnreachableError,
)
from tokenwire.models.errors import ModelBusy as ModelBusy
from tokenwire.models.errors import UpstreamUnreachable as UpstreamUnreachable
from tokenwire.models.manager import DEFAULT_MODEL, ModelManager, default_manager
from tokenwire.models.producer import model_producer
from tokenwire.models.registry import ModelURL, backend_from_url, register_scheme
from tokenwire.models.scripted import ScriptedBackend

__all__ = [
    "DEFAULT_MODEL",
    "ContextLengthExceededError",
    "Finish",
    "GenerationRequest",
    "ModelBackend",
    "ModelBusyError",
    "ModelError",
    "ModelManager",
    "ModelURL",
    "ScriptedBackend",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamUnreachableError",
    "Usage",
    "backend_from_url",
    "default_manager",
    "model_producer",
    "register_scheme",
]
