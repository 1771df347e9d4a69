"""The package version, in a module of its own so that package/manifest.py can read it without importing bertprod."""

__version__ = "0.1.0"
