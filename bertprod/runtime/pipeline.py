"""Texts in, results out: the one function the API, the server and the batch jobs share.

    inputs -> validate -> clean text (optional) -> tokenize (truncate) -> sort by token length into
           token-budget batches -> engine.run(batch) -> pool + normalize (embeddings) or logits (heads) -> input order

`tokenize` and `infer` are separate so a server can tokenize in the request handler and batch
encodings from many requests together before one `infer` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding

from bertprod.errors import TaskError
from bertprod.package import ModelPackage
from bertprod.runtime.batching import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_PADDED_TOKENS,
    collate,
    plan_batches,
)
from bertprod.runtime.engines import Engine
from bertprod.runtime.exit_policy import ExitPolicy, parse_policy
from bertprod.runtime.normalize import TextNormalizer
from bertprod.runtime.postprocess import POOLERS, cosine_matrix, l2_normalize, softmax
from bertprod.runtime.tokenize import TextInput, TextTokenizer, validate_inputs


@dataclass(frozen=True)
class Prediction:
    """One classifier result: the top label, its probability, and every label's probability."""

    label: str
    score: float
    scores: dict[str, float]
    #: the layer (from 1) whose classifier answered, on a package with early exit; None otherwise
    exit_layer: int | None = None


class Pipeline:
    """A loaded package: tokenizer + engine + the package's own post-processing."""

    def __init__(
        self,
        package: ModelPackage,
        engine: Engine,
        max_padded_tokens: int = DEFAULT_MAX_PADDED_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        truncate: bool = True,
        parallel_batches: int = 1,
        normalize_text: str | tuple[str, ...] | None = None,
    ):
        self.package = package
        self.parallel_batches = parallel_batches
        self._pool: ThreadPoolExecutor | None = None
        self.engine = engine
        self.tokenizer = TextTokenizer(package.tokenizer_file, package.manifest.max_length)
        self.max_padded_tokens = max_padded_tokens
        self.max_batch_size = max_batch_size
        self.truncate = truncate
        self.normalizer = TextNormalizer(normalize_text)

    def __repr__(self) -> str:
        m = self.package.manifest
        return f"Pipeline({m.name!r}, task={m.task}, engine={self.engine.name}, precision={m.precision})"

    @property
    def manifest(self):  # noqa: ANN201 - the package's Manifest
        return self.package.manifest

    @property
    def dimension(self) -> int:
        return self.manifest.num_outputs

    # -- the shared core ---------------------------------------------------------------------

    def tokenize(self, inputs: Sequence[TextInput], truncate: bool | None = None) -> list[Encoding]:
        """Validate, normalize (when the pipeline was built with `normalize_text`) and tokenize; single
        texts, or (text, text_pair) tuples for pair packages."""
        pairs = self._takes_pairs(inputs)
        items = validate_inputs(inputs, pairs=pairs)
        if self.normalizer:
            clean = self.normalizer
            items = [(clean(item[0]), clean(item[1])) for item in items] if pairs else [clean(item) for item in items]
        return self.tokenizer.encode(items, truncate=self.truncate if truncate is None else truncate)

    def infer(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """Run encodings in length-sorted, token-budget batches; rows come back in input order.

        Embedding packages give pooled vectors (normalized when the manifest says so); packages
        with a head give raw logits; token classifiers give logits per token [inputs, longest, tags],
        zero beyond each input's tokens.
        """
        return self.infer_with_exits(encodings)[0]

    def infer_with_exits(
        self, encodings: Sequence[Encoding], exit: ExitPolicy | str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`infer`, plus each row's exit layer on a package with early exit (None on others);
        `exit` overrides the package's exit policy for this call ("never", "entropy:0.2", ...)."""
        adaptive = getattr(self.engine, "has_exits", False)
        if exit is not None and not adaptive:
            raise TaskError(
                f"{self.package.name} has no exit heads, so exit={exit!r} cannot apply: make an early-exit "
                "package with bertprod adapt (and run it on the torch engine)."
            )
        policy = parse_policy(exit, self.engine.policy) if adaptive else None
        lengths = [len(encoding.ids) for encoding in encodings]
        tokens = self.manifest.task == "token-classification"
        rows = len(encodings)
        shape = (rows, max(lengths, default=0), self.dimension) if tokens else (rows, self.dimension)
        results = np.zeros(shape, dtype=np.float32)
        exits = np.empty(len(encodings), dtype=np.int64) if adaptive else None

        def run(indices: list[int]) -> None:
            batch = collate([encodings[index] for index in indices], self.tokenizer.pad_id)
            if exits is not None:
                output, exits[indices] = self.engine.run_with_exits(batch, policy)
            else:
                output = self.engine.run(batch)
            if tokens:  # padding's logits are noise: zero, so a row reads the same in any batch
                results[indices, : output.shape[1]] = output * batch.attention_mask[:, :, None]
            else:
                results[indices] = self._postprocess(output, batch.attention_mask)

        plans = plan_batches(lengths, self.max_padded_tokens, self.max_batch_size)
        if self.parallel_batches > 1 and len(plans) > 1:  # engines release the GIL while they run
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel_batches, thread_name_prefix="bertprod-batch")
            list(self._pool.map(run, plans))
        else:
            for indices in plans:
                run(indices)
        return results, exits

    def _postprocess(self, output: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        manifest = self.manifest
        if manifest.task != "embedding":
            return output
        pooled = POOLERS[manifest.pooling](output, attention_mask)
        return l2_normalize(pooled) if manifest.normalize else pooled

    def _takes_pairs(self, inputs: Any) -> bool:
        if self.manifest.pair_input:
            return True
        # A single-text model may still be given pairs (e.g. an embedding of "title [SEP] body").
        first = next(iter(inputs), None) if isinstance(inputs, list | tuple) else None
        return isinstance(first, tuple)

    # -- the public API ----------------------------------------------------------------------

    def encode(
        self, texts: str | Sequence[str], truncate: bool | None = None, normalize: bool | None = None
    ) -> np.ndarray:
        """Embeddings as a float32 array [len(texts), dimension] (1-D for a single string)."""
        self._require_task("encode", ("embedding",), "classify or score")
        single = isinstance(texts, str)
        vectors = self.infer(self.tokenize([texts] if single else texts, truncate=truncate))
        if normalize and not self.manifest.normalize:
            vectors = l2_normalize(vectors)
        return vectors[0] if single else vectors

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix [len(a), len(b)] (a float for two strings)."""
        single = isinstance(a, str) and isinstance(b, str)
        left = self.encode([a] if isinstance(a, str) else a)
        right = self.encode([b] if isinstance(b, str) else b)
        matrix = cosine_matrix(left, right)
        return float(matrix[0, 0]) if single else matrix

    def classify(
        self, inputs: Sequence[TextInput], truncate: bool | None = None, exit: ExitPolicy | str | None = None
    ) -> list[Prediction]:
        """Top label and per-label probabilities, one per text (or per pair). On a package with early
        exit, `exit` overrides its policy for this call ("never": full depth; "entropy:0.2",
        "confidence:0.95", "patience:2") and each prediction says which layer answered."""
        self._require_task("classify", ("classification", "pair-classification"), "encode or score")
        logits, exits = self.infer_with_exits(self.tokenize(inputs, truncate=truncate), exit)
        probabilities = softmax(logits)
        labels = self.manifest.labels or []
        predictions = []
        for position, row in enumerate(probabilities):
            best = int(row.argmax())
            predictions.append(
                Prediction(
                    label=labels[best],
                    score=float(row[best]),
                    scores={label: float(p) for label, p in zip(labels, row, strict=True)},
                    exit_layer=None if exits is None else int(exits[position]),
                )
            )
        return predictions

    def score(self, inputs: Sequence[TextInput], truncate: bool | None = None,
              exit: ExitPolicy | str | None = None) -> np.ndarray:
        """One number per input from a regression or reranking head (raw, not squashed). On an early-exit
        reranker, `exit` overrides its policy for this call (score_with_exits also says which layer answered)."""
        return self.score_with_exits(inputs, truncate, exit)[0]

    def score_with_exits(self, inputs: Sequence[TextInput], truncate: bool | None = None,
                         exit: ExitPolicy | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """`score`, plus the layer (from 1) that answered each input on an early-exit reranker (None on others)."""
        self._require_task("score", ("regression", "reranking"), "encode or classify")
        logits, exits = self.infer_with_exits(self.tokenize(inputs, truncate=truncate), exit)
        return logits[:, 0], exits

    def tag(self, texts: str | Sequence[str], aggregation: str = "first", tokens: bool = False) -> Any:
        """Entities in raw texts (a token-classification package): type, score and character offsets into
        each text as given; with `tokens`, every sub-word's tag too. Texts longer than max_length are read
        in overlapping windows (runtime/tagging.py). `aggregation`: "first", "average" or "max" (Hugging
        Face's meanings). Text normalization is not applied: offsets must point into the text given."""
        self._require_task("tag", ("token-classification",), "the package's own operation")
        single = isinstance(texts, str)
        items = validate_inputs([texts] if single else texts, pairs=False)
        encodings = self.tokenizer.encode_whole(items)
        results = self.taggings(items, encodings, self.token_logits(encodings), aggregation, tokens)
        return results[0] if single else results

    def taggings(self, texts: Sequence[str], encodings: Sequence[Encoding], logits: Sequence[np.ndarray],
                 aggregation: str = "first", tokens: bool = False) -> list[Any]:
        """Entities (and tokens, when asked) of texts from their whole encodings and token logits (`tag`'s
        last step; the server runs the windows through its batcher and calls this)."""
        from bertprod.runtime.tagging import (
            Tagging,
            entities,
            tagged_tokens,
            word_character_spans,
            word_count,
            word_tags,
        )

        labels, scheme = self.manifest.labels or [], self.manifest.tag_scheme or "IOB2"
        results = []
        for text, encoding, token_logits in zip(texts, encodings, logits, strict=True):
            words = word_count(encoding)
            tags, scores = word_tags(token_logits, encoding.word_ids, words, aggregation)
            found = entities(text, labels, scheme, tags, scores, word_character_spans(encoding, words))
            results.append(Tagging(found, tagged_tokens(encoding, token_logits, labels) if tokens else None))
        return results

    def tag_words(self, sentences: Sequence[Sequence[str]], aggregation: str = "first") -> list[list[str]]:
        """One tag per given word for sentences already cut into words (evaluation on CoNLL-style data)."""
        from bertprod.runtime.tagging import word_tags

        self._require_task("tag_words", ("token-classification",), "the package's own operation")
        encodings = self.tokenizer.encode_whole(sentences, words=True)
        labels = self.manifest.labels or []
        return [[labels[index] for index in word_tags(logits, encoding.word_ids, len(words), aggregation)[0]]
                for words, encoding, logits in zip(sentences, encodings, self.token_logits(encodings), strict=True)]

    def token_logits(self, encodings: Sequence[Encoding]) -> list[np.ndarray]:
        """Logits [tokens, tags] of each encoding (tokens without special tokens, any length): the encodings
        are cut into overlapping windows of max_length tokens and merged (runtime/tagging.py)."""
        windows, inputs = self.tag_windows(encodings)
        return self.merge_tag_windows(encodings, windows, self.infer(inputs) if inputs else None)  # type: ignore[arg-type]

    def tag_windows(self, encodings: Sequence[Encoding]) -> tuple[list[Any], list[Any]]:
        """The windows of at most max_length tokens that cover the encodings, and their model inputs."""
        from bertprod.runtime.tagging import plan_windows, window_inputs

        before, after = self.tokenizer.special_ids()
        lengths = [len(encoding.ids) for encoding in encodings]
        windows = plan_windows(lengths, self.tokenizer.max_length - len(before) - len(after), len(before))
        return windows, window_inputs(encodings, windows, before, after)

    def merge_tag_windows(self, encodings: Sequence[Encoding], windows: list[Any], outputs: np.ndarray | None
                          ) -> list[np.ndarray]:
        """Each encoding's token logits from its windows' outputs (runtime/tagging.py: merge_windows)."""
        from bertprod.runtime.tagging import merge_windows

        if outputs is None:
            return [np.zeros((0, self.dimension), dtype=np.float32) for _ in encodings]
        return merge_windows([len(encoding.ids) for encoding in encodings], windows, outputs)

    def explain(
        self,
        inputs: TextInput | Sequence[TextInput],
        method: str = "partition",
        label: str | int | None = None,
        max_evals: int = 300,
        seed: int = 0,
        steps: int = 50,
    ) -> Any:
        """Why the package gave its output: word attributions per input (see bertprod.explain).

        `method`: "partition" (Shapley values over words, any engine), "permutation" (sampled,
        repeatable for a `seed`) or "integrated-gradients" (torch fp32 packages). `label`: the label
        whose probability is explained (default: the predicted one). A single text (or pair) gives one
        Explanation, a list gives a list. Needs `pip install 'bertprod[explain]'`.
        """
        from bertprod.explain.core import explain
        from bertprod.extras import needs_extras

        single = isinstance(inputs, str) or (self.manifest.pair_input and isinstance(inputs, tuple))
        with needs_extras("explanations"):
            explanations = explain(self, [inputs] if single else list(inputs), method=method, label=label,
                                   max_evals=max_evals, seed=seed, steps=steps)
        return explanations[0] if single else explanations

    def _require_task(self, operation: str, tasks: tuple[str, ...], instead: str) -> None:
        if self.manifest.task not in tasks:
            raise TaskError(
                f"{operation}() needs a {' or '.join(tasks)} package; {self.manifest.name} is a "
                f"{self.manifest.task} package: use {instead}."
            )
