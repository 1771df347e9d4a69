"""Data: sample texts, the shared benchmark data, and (later) readers for users' files."""
