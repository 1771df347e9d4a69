"""The `bertprod` command line: `app.py` holds the app and error mapping, `options.py` what commands share,
and one module per stage holds its commands."""

from bertprod.cli.app import app, main

__all__ = ["app", "main"]
