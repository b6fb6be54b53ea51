"""Model backends: the protocol, the registry and the built-in backends."""

from tokenwire.models.base import Finish, GenerationRequest, ModelBackend, Usage
from tokenwire.models.manager import ModelManager
from tokenwire.models.scripted import ScriptedBackend

__all__ = [
    "Finish",
    "GenerationRequest",
    "ModelBackend",
    "ModelManager",
    "ScriptedBackend",
    "Usage",
]
