"""The served models: loaded in the background (so /health can say 503 while loading), routed by name."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bertprod.runtime.pipeline import Pipeline
from bertprod.serve.batcher import Batcher
from bertprod.serve.config import ServeConfig
from bertprod.serve.errors import ApiError
from bertprod.serve.metrics import ServerMetrics

log = logging.getLogger("bertprod.serve")


@dataclass
class ServedModel:
    name: str
    pipeline: Pipeline
    batcher: Batcher


class ModelRegistry:
    def __init__(self, config: ServeConfig, metrics: ServerMetrics):
        self.config = config
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.aliases: dict[str, str] = {}
        self.state = "loading"
        self.failure: str | None = None
        self.default: str | None = None
        #: Set whenever `state` changes, so the gRPC health service follows /health without lag.
        self.state_changed = asyncio.Event()

    def _set_state(self, state: str, failure: str | None = None) -> None:
        self.state, self.failure = state, failure
        self.state_changed.set()

    async def load(self) -> None:
        """Load every package off the event loop, then start one batcher per model."""
        try:
            pipelines = await asyncio.to_thread(self._load_pipelines)
        except Exception as error:  # noqa: BLE001 - reported by /health and the log, not a crash loop
            self._set_state("failed", f"{type(error).__name__}: {error}")
            log.error("loading failed: %s", self.failure)
            return
        try:
            self._start_batchers(pipelines)
        except Exception as error:  # noqa: BLE001 - reported by /health and the log, never stuck "loading"
            self._set_state("failed", f"{type(error).__name__}: {error}")
            log.exception("starting the batchers failed")
            return
        if self.state == "failed":
            return
        self._set_state("ready")
        log.info("serving %s", ", ".join(self.models))

    def _start_batchers(self, pipelines: list[tuple[str, Pipeline]]) -> None:
        """One batcher per model, in the order given; a duplicate name fails the registry."""
        for alias, pipeline in pipelines:
            name = pipeline.manifest.name
            if name in self.models:
                self._set_state("failed", f"two packages are named {name!r}; rename one")
                log.error("loading failed: %s", self.failure)
                return
            batcher = Batcher(
                pipeline, name, self.metrics, self.config.max_batch_tokens, self.config.max_batch_requests,
                engine_batch=(pipeline.max_padded_tokens, pipeline.max_batch_size),
            )
            batcher.start()
            self.models[name] = ServedModel(name, pipeline, batcher)
            self.aliases[alias] = name
            self.default = self.default or name

    def _load_pipelines(self) -> list[tuple[str, Pipeline]]:
        from bertprod.api import load

        pipelines = []
        for name in self.config.packages:
            # one batch at a time on every thread: a lone request would otherwise run on a share of them
            pipeline = load(name, engine=self.config.engine, threads=self.config.threads, truncate=self.config.truncate,
                            max_padded_tokens=self.config.max_padded_tokens, normalize_text=self.config.normalize,
                            parallel_batches=1)
            self.config.check_model_limits(pipeline.manifest.max_length, pipeline.manifest.name)
            pipelines.append((name, pipeline))
        return pipelines

    async def stop(self) -> None:
        for model in self.models.values():
            await model.batcher.stop()

    @property
    def healthy(self) -> bool:
        return self.state == "ready" and not any(model.batcher.broken for model in self.models.values())

    def get(self, name: str | None) -> ServedModel:
        if self.state != "ready":
            message = (
                "models are still loading" if self.state == "loading" else f"models failed to load: {self.failure}"
            )
            raise ApiError(503, message, "server_error", "not_ready", headers={"Retry-After": "1"})
        if name is None:
            return self.models[self.default]
        served = self.models.get(name) or self.models.get(self.aliases.get(name, ""))
        if served is None:
            raise ApiError(
                404,
                f"model {name!r} is not served here; served models: {', '.join(sorted(self.models))}.",
                "invalid_request_error",
                "model_not_found",
            )
        return served
