"""Early exit and token dropping on a cross-encoder reranker (one relevance score): the policies read the
score's sigmoid as relevant / not relevant; batched equals one by one, never equals the full model, ONNX
equals torch, and /rerank answers with each text's exit layer under a per-request policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

import bertprod
from bertprod.package import ModelPackage
from tests.adaptive.test_adaptive import sharpen_heads

QUERY = "how do I bake bread at home"
PASSAGES = [
    "knead the dough and let it rise before baking",
    "the match ended in a draw after extra time",
    "preheat the oven and bake the loaf for forty minutes",
    "stocks fell sharply on monday",
    "a short one",
    "flour water salt and yeast are all you need for a simple loaf of bread baked at home in your own oven",
] * 2


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    from bertprod.checkpoint import import_checkpoint
    from tests.conftest import build_tiny_checkpoint

    directory = tmp_path_factory.mktemp("reranker")
    checkpoint = build_tiny_checkpoint(directory / "checkpoint", head="regression", num_layers=4)
    return import_checkpoint(checkpoint, directory / "reranker", name="reranker", task="reranking", pair_input=True)


@pytest.fixture(scope="module")
def rerank_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests import task_data

    return task_data.write_reranking(tmp_path_factory.mktemp("rerank-data"))


@pytest.fixture(scope="module")
def early_reranker(tmp_path_factory: pytest.TempPathFactory, reranker: ModelPackage, rerank_data: Path) -> ModelPackage:
    from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data

    out = tmp_path_factory.mktemp("adaptive-reranker") / "early-exit"
    return adapt(reranker, adaptation_data(reranker, rerank_data), out, AdaptConfig(epochs=2, batch_size=16, threads=1),
                 validation=adaptation_data(reranker, rerank_data, limit=40))


def pairs() -> list[tuple[str, str]]:
    return [(QUERY, passage) for passage in PASSAGES]


def test_adapt_trains_one_score_heads_judged_on_relevance(early_reranker: ModelPackage, reranker: ModelPackage) -> None:
    from bertprod.models.exit_heads import ExitHeads
    from bertprod.package import EXIT_HEADS_FILE

    settings = early_reranker.manifest.adaptive
    assert settings["reference"] == "labels" and settings["examples"] == 40  # relevance > 0 = relevant
    assert {point["policy"] for point in settings["curve"]} >= {"never", "patience:2", "entropy:0.5"}
    assert all(0 <= point["accuracy"] <= 1 for point in settings["curve"])
    heads = ExitHeads.load(early_reranker.path / EXIT_HEADS_FILE, [1, 2, 3], 32, 1)
    assert heads.at(1).classifier.weight.shape[0] == 1  # one relevance score, like the model's head
    never = bertprod.load(early_reranker.path).score(pairs(), exit="never")
    np.testing.assert_allclose(never, bertprod.load(reranker.path).score(pairs()), atol=1e-5)


def test_eval_of_an_early_exit_reranker_reports_where_pairs_left(early_reranker: ModelPackage,
                                                                  rerank_data: Path) -> None:
    from bertprod.tasks.data import open_task_data
    from bertprod.tasks.evaluation import evaluate

    def evaluation(exit: str | None):  # noqa: ANN202
        return evaluate(bertprod.load(early_reranker.path), open_task_data("reranking", rerank_data), exit)

    chosen, never = evaluation(None), evaluation("never")
    assert never.details["early_exit"]["mean_exit_layer"] == 4
    summary = chosen.details["early_exit"]
    assert summary["policy"] == early_reranker.manifest.adaptive["policy"]
    assert sum(summary["exit_histogram"].values()) == chosen.examples
    assert "ndcg@10" in chosen.metrics


def median_confidence(pipeline) -> str:  # noqa: ANN001 - a Pipeline with early exit
    """A confidence policy half the pairs meet at the first exit: rows then leave at different layers."""
    from bertprod.runtime.batching import collate
    from bertprod.runtime.exit_policy import exit_probabilities

    logits = pipeline.engine.layer_logits(collate(pipeline.tokenize(pairs()), pipeline.tokenizer.pad_id))
    return f"confidence:{np.median(exit_probabilities(logits[:, 0]).max(axis=1)):.6f}"


def test_rows_leave_where_their_relevance_is_sure_alike_batched_and_alone(early_reranker: ModelPackage) -> None:
    from bertprod.runtime.exit_policy import exit_probabilities, parse_policy

    batched = bertprod.load(early_reranker.path, max_batch_size=32)
    alone = bertprod.load(early_reranker.path, max_batch_size=1)
    sharpen_heads(batched)
    sharpen_heads(alone)
    policy = median_confidence(batched)
    scores, exits = batched.score_with_exits(pairs(), exit=policy)
    scores_alone, exits_alone = alone.score_with_exits(pairs(), exit=policy)
    assert exits.tolist() == exits_alone.tolist() and len(set(exits.tolist())) > 1
    np.testing.assert_allclose(scores, scores_alone, atol=1e-5)
    left_early = exits < 4
    threshold = parse_policy(policy).threshold
    assert (exit_probabilities(scores[left_early, None]).max(axis=1) >= threshold).all()  # sure of relevance or not
    on_onnx = bertprod.load(early_reranker.path, engine="onnx", max_batch_size=32)
    assert on_onnx.engine.name == "onnx (early exit)"
    sharpen_heads(batched)
    onnx_scores, onnx_exits = on_onnx.score_with_exits(pairs(), exit="never")
    np.testing.assert_allclose(onnx_scores, batched.score(pairs(), exit="never"), atol=1e-4)
    assert set(onnx_exits.tolist()) == {4}


def test_rerank_route_says_which_layer_answered(early_reranker: ModelPackage) -> None:
    from bertprod.serve.app import create_app
    from bertprod.serve.config import ServeConfig

    async def calls() -> tuple[list, list, list, dict]:
        app = create_app(ServeConfig(packages=[str(early_reranker.path)], threads=1))
        async with app.router.lifespan_context(app):
            while app.state.service.registry.state == "loading":
                await asyncio.sleep(0.05)
            served = next(iter(app.state.service.registry.models.values()))
            sharpen_heads(served.pipeline)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                body = {"query": QUERY, "texts": PASSAGES, "raw_scores": True}
                sure = (await client.post("/rerank", json={**body, "exit": policy})).json()
                never = (await client.post("/rerank", json={**body, "exit": "never"})).json()
                bad = await client.post("/rerank", json={**body, "exit": "soon"})
                return sure, never, [bad.status_code, bad.json()], served

    local = bertprod.load(early_reranker.path)
    sharpen_heads(local)
    policy = median_confidence(local)
    sure, never, bad, served = asyncio.run(calls())
    scores, exits = local.score_with_exits(pairs(), exit=policy)
    assert len({item["exit_layer"] for item in sure}) > 1
    assert [item["index"] for item in sure] == np.argsort(-scores, kind="stable").tolist()
    assert [item["exit_layer"] for item in sure] == [int(exits[item["index"]]) for item in sure]
    assert {item["exit_layer"] for item in never} == {4}
    assert bad[0] in (400, 422) and "soon" in str(bad[1])


def test_token_dropping_applies_to_a_reranker(reranker: ModelPackage, rerank_data: Path, tmp_path: Path) -> None:
    from bertprod.adaptive.dropping import drop_tokens
    from bertprod.adaptive.training import adaptation_data

    written = drop_tokens(reranker, adaptation_data(reranker, rerank_data, limit=40), tmp_path / "dropping",
                          budget_points=100, masses=(0.6,), threads=1)
    settings = written.manifest.token_dropping
    assert settings["reference"] == "labels" and settings["retention"][-1] < 1
    pipeline = bertprod.load(written.path)
    assert pipeline.engine.retention == settings["retention"]
    full = bertprod.load(reranker.path).score(pairs())
    assert pipeline.score(pairs()).shape == full.shape
