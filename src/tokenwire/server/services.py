"""What every transport needs: the hub, the models and the configuration."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from tokenwire.core.shutdown import Connections
from tokenwire.errors import InvalidRequestError
from tokenwire.metrics import count_end
from tokenwire.models import GenerationRequest, ModelManager
from tokenwire.models.producer import model_producer
from tokenwire.pipelines import PipelineRegistry, within_budget
from tokenwire.server.access import Access
from tokenwire.server.config import ServerConfig
from tokenwire.server.ratelimit import TokenBuckets, parse_rate
from tokenwire.stream import Hub

if TYPE_CHECKING:
    from tokenwire.workers.redis_worker import JobRunner

# The fields of a generation request (POST /v1/streams, the WebSocket and Socket.IO
# start ops; docs/protocol.md): anything else is refused, so a typo such as
# ``max_tokenz`` is not silently replaced by a default.
GENERATION_FIELDS = frozenset(
    {
        "model", "prompt", "messages", "max_tokens", "temperature", "top_p",
        "stop", "seed", "delay_ms", "top_logprobs",
    }
)  # fmt: skip
PIPELINE_FIELDS = frozenset({"pipeline", "params"})


class UnknownFieldError(InvalidRequestError):
    code = "unknown_field"

    def __init__(self, name: str, known: frozenset[str]) -> None:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown field {name!r}{hint}; known: {', '.join(sorted(known))}")
        self.field = name


def check_fields(body: Any, known: frozenset[str]) -> None:
    """422 ``unknown_field`` naming the first field of ``body`` not in ``known``."""
    if isinstance(body, dict):
        for name in body:
            if name not in known:
                raise UnknownFieldError(str(name), known)


class Services:
    """What every route needs: the hub, the models and the configuration."""

    def __init__(
        self,
        hub: Hub,
        models: ModelManager,
        config: ServerConfig,
        pipelines: PipelineRegistry | None = None,
    ) -> None:
        self.hub = hub
        self.models = models
        self.config = config
        self.pipelines = pipelines or PipelineRegistry()
        self.jobs: JobRunner | None = None
        """Over Redis: runs generations in a local slot or queues them (create_app)."""
        self.connections = Connections()
        """Open streaming connections, ended gracefully on shutdown (core/shutdown.py)."""
        rate = parse_rate(config.rate_limit)
        self.access = Access.from_settings(
            config.api_keys,
            config.token_secret,
            config.token_ttl_s,
            TokenBuckets(rate) if rate is not None else None,
        )

    async def start_generation(self, body: Any) -> dict[str, Any]:
        """Validate a generation request (a model, or a ``pipeline``), start its stream,
        and describe it."""
        if isinstance(body, dict) and "pipeline" in body:
            check_fields(body, PIPELINE_FIELDS)
            from tokenwire.tensors import tensors_to_frame_stream

            source = self.pipelines.create(body["pipeline"], body.get("params"))
            events = within_budget(tensors_to_frame_stream(source), self.config.max_stream_events)
            started = await self.hub.start(events, model=f"pipeline:{body['pipeline']}")
            count_end(started, self.hub.metrics)
            return self.describe(started.id)
        check_fields(body, GENERATION_FIELDS)
        request = GenerationRequest.from_body(body, default_model=self.models.default or "")
        if self.jobs is not None:  # over Redis: here if a slot is free, else queued
            sid, local = await self.jobs.submit(request)
            if local is not None:
                count_end(local, self.hub.metrics)
            return self.describe(sid, request.model)
        backend = self.models.get(request.model)
        # Refuse with 503 now (model_busy, model_unavailable) rather than start a
        # stream that can only fail.
        check = getattr(backend, "check_admission", None)
        if check is not None:
            check()
        producer = model_producer(
            backend, request, metrics=self.hub.metrics.for_model(request.model)
        )
        stream = await self.hub.start(producer, model=request.model)
        count_end(stream, self.hub.metrics)
        return self.describe(stream.id)

    def describe(self, stream_id: str, queued_model: str | None = None) -> dict[str, Any]:
        """A stream this node runs, or with ``queued_model`` one it may have queued."""
        stream = self.hub.streams.get(stream_id)
        if stream is None and queued_model is None:
            stream = self.hub.get(stream_id)  # 404
        status = str(stream.status) if stream is not None else "pending"
        model = stream.model if stream is not None else queued_model
        base = f"/v1/streams/{stream_id}"
        return {
            "id": stream_id,
            "status": status,
            "model": model,
            "events_url": f"{base}/events",
            "ndjson_url": f"{base}/ndjson",
            "status_url": base,
            **self.access.tokens(stream_id),
        }
