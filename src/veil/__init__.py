"""Veil: a privacy-first, end-to-end-encrypted messaging backend."""
