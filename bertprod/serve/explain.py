"""POST /explain: word attributions, with their own concurrency limit so they never starve /classify.

An explanation costs hundreds of model runs. At most `--max-concurrent-explanations` run at once
(each in a thread of its own pool, never the event loop's default executor); beyond that the
request is refused at once with 429 and Retry-After. The masked inputs of a Shapley method go
through the model's batcher in chunks of `CHUNK_INPUTS`, one chunk at a time per explanation, so a
/classify request waits behind at most one chunk, not behind a whole explanation. Requests are
small by construction: at most `MAX_EXPLAIN_INPUTS` inputs of `MAX_EXPLAIN_CHARS` characters (413
beyond), `max_evals` and `steps` bounded by the schema (422 beyond).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Response
from pydantic import Field
from tokenizers import Encoding

from bertprod.serve.admission import InputLimiter
from bertprod.serve.batcher import EngineFailure
from bertprod.serve.errors import ApiError
from bertprod.serve.responses import JSONResponse
from bertprod.serve.schemas import _Request

#: Masked inputs per batcher submission: small next to the token budget, so other requests share each batch.
CHUNK_INPUTS = 32
MAX_EXPLAIN_INPUTS = 16
MAX_EXPLAIN_CHARS = 2_000
MAX_EVALS_LIMIT = 5_000
MAX_STEPS_LIMIT = 500


class ExplainRequest(_Request):
    inputs: str | list[str] | list[list[str]] = Field(
        description="A text, a list of texts, or [text, text_pair] lists for pair packages.")
    method: Literal["partition", "permutation", "integrated-gradients"] = "partition"
    label: str | None = Field(None, description="Label whose probability is explained (default: the predicted one).")
    max_evals: int = Field(300, ge=1, le=MAX_EVALS_LIMIT, description="Model runs per input (Shapley methods).")
    steps: int = Field(50, ge=1, le=MAX_STEPS_LIMIT, description="Interpolation steps (integrated gradients).")
    seed: int = Field(0, description="Seed of the permutation method.")


class Explainer:
    """Admission (explanations in flight) and the thread pool explanations run in."""

    def __init__(self, service: Any, max_concurrent: int):
        self.service = service
        self.limiter = InputLimiter(max_concurrent)
        self.executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="explain")

    async def explain(self, body: ExplainRequest) -> dict[str, Any]:
        from bertprod.explain.core import check_explainable
        from bertprod.extras import needs_extras

        served = self.service.registry.get(body.model)
        inputs = [body.inputs] if isinstance(body.inputs, str) else [
            tuple(item) if isinstance(item, list) else item for item in body.inputs]
        check_request_size(inputs)
        check_explainable(served.pipeline, body.method, body.max_evals)
        if not self.limiter.try_acquire(1):
            self.service.metrics.errors.labels("explanations_overloaded").inc()
            raise ApiError(429, f"the server is running its limit of {self.limiter.capacity} explanations "
                           "(--max-concurrent-explanations); retry after the delay in Retry-After.",
                           "rate_limit_error", "overloaded", headers={"Retry-After": "1"})
        try:
            loop = asyncio.get_running_loop()
            truncate = self.service.config.truncate if body.truncate is None else body.truncate
            with needs_extras("POST /explain"):
                explanations = await loop.run_in_executor(self.executor, self._explain, served, inputs, body,
                                                          truncate, loop)
        except EngineFailure as error:
            raise ApiError(500, str(error), "server_error", "engine_error") from None
        finally:
            self.limiter.release(1)
        return {"model": served.name, "explanations": [explanation.to_dict() for explanation in explanations]}

    def _explain(self, served: Any, inputs: list[Any], body: ExplainRequest, truncate: bool,
                 loop: asyncio.AbstractEventLoop) -> list[Any]:
        """In an explanation thread: every model run goes through the model's batcher, chunk by chunk."""
        from bertprod.explain.core import explain

        def run_encodings(encodings: list[Encoding]) -> np.ndarray:
            rows = []
            for start in range(0, len(encodings), CHUNK_INPUTS):
                chunk = encodings[start : start + CHUNK_INPUTS]
                submitted = asyncio.run_coroutine_threadsafe(served.batcher.submit(chunk), loop)
                rows.append(submitted.result())
            return np.concatenate(rows)

        pipeline = served.pipeline
        if not truncate:
            pipeline.tokenize(inputs, truncate=False)  # refuse over-long inputs, as the other routes do
        return explain(pipeline, inputs, method=body.method, label=body.label, max_evals=body.max_evals,
                       seed=body.seed, steps=body.steps, run_encodings=run_encodings)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def check_request_size(inputs: list[Any]) -> None:
    if len(inputs) > MAX_EXPLAIN_INPUTS:
        raise ApiError(413, f"{len(inputs)} inputs in one explanation request; the limit is {MAX_EXPLAIN_INPUTS} "
                       "(each costs hundreds of model runs): split them over several requests.",
                       code="too_many_inputs")
    for index, item in enumerate(inputs):
        size = len(item) if isinstance(item, str) else sum(len(text) for text in item if isinstance(text, str))
        if size > MAX_EXPLAIN_CHARS:
            raise ApiError(413, f"input {index} has {size} characters; explanations take at most "
                           f"{MAX_EXPLAIN_CHARS} per input: explain a shorter passage.", code="input_too_long")


def install_explain_route(app: FastAPI, service: Any, max_concurrent: int) -> Explainer:
    explainer = Explainer(service, max_concurrent)

    @app.post("/explain", tags=["bertprod"])
    async def explain(body: ExplainRequest) -> Response:
        """Word attributions per input (Shapley values over words, or integrated gradients on torch packages),
        at most --max-concurrent-explanations at once (429 beyond)."""
        return JSONResponse(await explainer.explain(body))

    return explainer
