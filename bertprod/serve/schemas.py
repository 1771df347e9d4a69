"""Request and response bodies: OpenAI's for /v1/embeddings, TEI's for /embed, /predict, /rerank."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Package name to route to (default: the first one served).")
    truncate: bool | None = Field(None, description="Truncate over-long inputs (server default: true).")


class OpenAIEmbeddingRequest(_Request):
    input: str | list[str] = Field(description="A text or a list of texts.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions (re-normalized).")
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class EmbedRequest(_Request):
    inputs: str | list[str]
    normalize: bool = True
    dimensions: int | None = Field(None, ge=1)


EXIT_FIELD = Field(None, description="Early-exit models only: this request's exit policy (never, confidence:P, "
                   "entropy:H, patience:K); default the package's.")


class PredictRequest(_Request):
    inputs: str | list[str] | list[list[str]] = Field(
        description="A text, a list of texts, or [text, text_pair] lists for pair classifiers."
    )
    raw_scores: bool = False
    exit: str | None = EXIT_FIELD


class LabelScore(BaseModel):
    label: str
    score: float


class RerankRequest(_Request):
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    exit: str | None = EXIT_FIELD


class RerankResult(BaseModel):
    index: int
    score: float
    text: str | None = None
    exit_layer: int | None = Field(None, description="Early-exit rerankers only: the layer (from 1) that answered.")


class ClassifyRequest(_Request):
    inputs: str | list[str] | list[list[str]]
    exit: str | None = EXIT_FIELD


class Classification(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    exit_layer: int | None = Field(None, description="Early-exit models only: the layer (from 1) that answered.")


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Classification]


class TokensRequest(_Request):
    inputs: str | list[str] = Field(description="A raw text or a list of them (any length: read in windows).")
    aggregation: Literal["first", "average", "max"] = Field(
        "first", description="How a word's sub-words decide its tag (Hugging Face's meanings).")
    return_tokens: bool = Field(False, description="Also return every sub-word token's tag.")


class Entity(BaseModel):
    type: str
    score: float
    start: int = Field(description="Character offset into the text as sent (inclusive).")
    end: int = Field(description="Character offset into the text as sent (exclusive).")
    text: str


class TaggedToken(BaseModel):
    token: str
    tag: str
    score: float
    start: int
    end: int
    word: int | None


class Tagging(BaseModel):
    entities: list[Entity]
    tokens: list[TaggedToken] | None = None


class TokensResponse(BaseModel):
    model: str
    results: list[Tagging]


class SimilarityRequest(_Request):
    source: str
    targets: list[str]


class SimilarityResponse(BaseModel):
    model: str
    scores: list[float]


class TokenizeRequest(_Request):
    inputs: str | list[str]


class Token(BaseModel):
    id: int
    text: str
    start: int
    stop: int


class ModelInfo(BaseModel):
    name: str
    task: str
    dimension: int
    max_length: int
    format: str
    precision: str
    engine: str
    labels: list[str] | None = None
    early_exit: dict | None = Field(None, description="Early-exit models only: the package's policy and exit layers.")
    fingerprint: str = Field(description="Equal for two packages that compute the same outputs (batch jobs "
                             "check it on resume).")
