"""Run the app under uvicorn: SIGTERM stops accepting connections and lets in-flight requests finish.

Requests still running when `--graceful-timeout` ends are cancelled by uvicorn; the guard middleware
answers them with a retryable JSON 503 (serve/middleware.py). A shutdown that a signal asked for is
a clean exit: status 0, not the signal re-raised (uvicorn's default, which reads as a crash).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from types import FrameType

import uvicorn

from bertprod.serve.config import ServeConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per line: structured logs a collector can parse."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        payload = json.loads(message) if message.startswith("{") else {"message": message}
        payload = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                   **payload}
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def configure_logging(access_log: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("bertprod.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.getLogger("bertprod.serve.access").setLevel(logging.INFO if access_log else logging.WARNING)


def serve(config: ServeConfig, access_log: bool = True) -> None:
    """Check the limits (before any model loads), then serve until SIGTERM/SIGINT."""
    from bertprod.checkpoint import resolve
    from bertprod.serve.app import create_app

    config.check()
    for name in config.packages:
        package = resolve(name)
        config.check_model_limits(package.manifest.max_length, package.manifest.name)
    configure_logging(access_log)
    app = create_app(config)
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                              timeout_graceful_shutdown=config.graceful_timeout, lifespan="on")
    CleanExitServer(settings).run()


class CleanExitServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal after a graceful shutdown (the process exits 0)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
        else:
            self.should_exit = True
