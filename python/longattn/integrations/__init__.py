"""Adapters that plug longattn's operators into other libraries (imported on demand)."""
