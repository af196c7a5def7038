"""Compatibility transformations between embedding spaces (filled by the adapters work)."""
