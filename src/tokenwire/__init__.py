"""tokenwire: stream AI model output to any number of clients, resumably.

The front door: everything public is re-exported here.
"""

from tokenwire.actors import Actor, Router, SessionActor, TokenStreamEvent
from tokenwire.asgi import lifespan, mount
from tokenwire.broker import Broker, LogInfo, MemoryBroker, Retention
from tokenwire.errors import (
    BodyTooLarge,
    BodyTooLargeError,
    InvalidRequest,
    InvalidRequestError,
    LimitExceeded,
    LimitExceededError,
    Overloaded,
    OverloadedError,
    StreamLagged,
    StreamLaggedError,
    StreamNotFound,
    StreamNotFoundError,
    TokenwireError,
    UnknownModel,
    UnknownModelError,
)
from tokenwire.events import Event
from tokenwire.models import GenerationRequest, ModelBackend, ModelManager, model_producer
from tokenwire.pipelines import PipelineRegistry
from tokenwire.responses import EventStreamResponse, SSEOptions, event_stream_response
from tokenwire.server.http_stream import HubStreamResponse, hub_stream_response
from tokenwire.stream import Emitter, Hub, HubConfig, Stream, StreamStatus, Subscription
from tokenwire.tensors import TensorAssembler, tensor_to_frames, tensors_to_frame_stream
from tokenwire.tracker import StreamingTracker

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "BodyTooLarge",
    "BodyTooLargeError",
    "Broker",
    "Emitter",
    "Event",
    "EventStreamResponse",
    "GenerationRequest",
    "Hub",
    "HubConfig",
    "HubStreamResponse",
    "InvalidRequest",
    "InvalidRequestError",
    "LimitExceeded",
    "LimitExceededError",
    "LogInfo",
    "MemoryBroker",
    "ModelBackend",
    "ModelManager",
    "Overloaded",
    "OverloadedError",
    "PipelineRegistry",
    "Retention",
    "Router",
    "SSEOptions",
    "SessionActor",
    "Stream",
    "StreamLagged",
    "StreamLaggedError",
    "StreamNotFound",
    "StreamNotFoundError",
    "StreamStatus",
    "StreamingTracker",
    "Subscription",
    "TensorAssembler",
    "TokenStreamEvent",
    "TokenwireError",
    "UnknownModel",
    "UnknownModelError",
    "__version__",
    "event_stream_response",
    "hub_stream_response",
    "lifespan",
    "model_producer",
    "mount",
    "tensor_to_frames",
    "tensors_to_frame_stream",
]
