"""Exports: pure renderers from a plan to {relative path: text}; one writer puts them on disk."""
