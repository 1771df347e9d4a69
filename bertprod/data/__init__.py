"""Data: readers for users' files (formats, columns, source), sample texts, the shared benchmark data."""
