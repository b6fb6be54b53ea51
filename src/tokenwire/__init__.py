"""tokenwire: stream AI model output to any number of clients, resumably.

The front door: everything public is re-exported here.
"""

from tokenwire.broker import Broker, LogInfo, MemoryBroker, Retention
from tokenwire.errors import (
    BodyTooLarge,
    InvalidRequest,
    LimitExceeded,
    Overloaded,
    StreamLagged,
    StreamNotFound,
    TokenwireError,
    UnknownModel,
)
from tokenwire.events import Event
from tokenwire.responses import SSEOptions, event_stream_response
from tokenwire.stream import Emitter, Hub, HubConfig, Stream, StreamStatus, Subscription

__version__ = "0.1.0"

__all__ = [
    "BodyTooLarge",
    "Broker",
    "Emitter",
    "Event",
    "Hub",
    "HubConfig",
    "InvalidRequest",
    "LimitExceeded",
    "LogInfo",
    "MemoryBroker",
    "Overloaded",
    "Retention",
    "SSEOptions",
    "Stream",
    "StreamLagged",
    "StreamNotFound",
    "StreamStatus",
    "Subscription",
    "TokenwireError",
    "UnknownModel",
    "__version__",
    "event_stream_response",
]
