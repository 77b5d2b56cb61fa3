"""The core: batch and planning types, Selection, the filter and method bases, the step engine, the disk cache.

Imports nothing above it (only ``functional``, ``errors`` and ``_validate``).
"""
