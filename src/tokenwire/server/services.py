"""What every transport needs: the hub, the models and the configuration."""

from __future__ import annotations

from typing import Any

from tokenwire.models import GenerationRequest, ModelManager
from tokenwire.models.producer import model_producer
from tokenwire.server.config import ServerConfig
from tokenwire.stream import Hub


class Services:
    """What every route needs: the hub, the models and the configuration."""

    def __init__(self, hub: Hub, models: ModelManager, config: ServerConfig) -> None:
        self.hub = hub
        self.models = models
        self.config = config

    async def start_generation(self, body: Any) -> dict[str, Any]:
        """Validate a generation request, start its stream, and describe it."""
        request = GenerationRequest.from_body(body, default_model=self.models.default or "")
        backend = self.models.get(request.model)
        stream = await self.hub.start(model_producer(backend, request), model=request.model)
        return self.describe(stream.id)

    def describe(self, stream_id: str) -> dict[str, Any]:
        stream = self.hub.get(stream_id)
        base = f"/v1/streams/{stream.id}"
        return {
            "id": stream.id,
            "status": str(stream.status),
            "model": stream.model,
            "events_url": f"{base}/events",
            "ndjson_url": f"{base}/ndjson",
            "status_url": base,
        }
