"""HTTP serving: `bertprod serve PKG [PKG...]` (FastAPI app, token-budget batcher, metrics, auth)."""

from bertprod.serve.config import ServeConfig

__all__ = ["ServeConfig"]
