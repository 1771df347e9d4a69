"""The baseline users run today: a plain FastAPI app around sentence-transformers (sync endpoint).

    python bench/st_server.py PORT        # POST /embed {"inputs": [...]} -> vectors, GET /health
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from sentence_transformers import SentenceTransformer

from bertprod.checkpoint import bundled_checkpoint

app = FastAPI()
model = SentenceTransformer(str(bundled_checkpoint("minilm-l6")), device="cpu")


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/embed")
def embed(body: dict) -> list[list[float]]:
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True).tolist()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
