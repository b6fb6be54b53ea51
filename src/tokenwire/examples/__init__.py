"""Built-in pipelines, registered in the default server (``tokenwire serve``).

- ``denoise`` (:mod:`.denoise`): an image refined step by step like a diffusion
  sampler, with ``progress`` events; ``python -m tokenwire.examples.denoise``.
- ``tensor`` (:mod:`.synthetic`): synthetic tensors of any dtype and size (capped
  at 512 MiB per request), made chunk by chunk; for tests and benchmarks.

Start one with ``POST /v1/streams {"pipeline": "denoise", "params": {…}}``.
"""

from __future__ import annotations

from tokenwire.pipelines import PipelineRegistry


def default_pipelines() -> PipelineRegistry:
    """A registry holding the built-in pipelines."""
    from tokenwire.examples.denoise import denoise
    from tokenwire.examples.synthetic import tensor_pipeline

    registry = PipelineRegistry()
    registry.register("denoise", denoise)
    registry.register("tensor", tensor_pipeline)
    return registry


__all__ = ["default_pipelines"]
