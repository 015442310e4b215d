"""Implementation modules of :mod:`medaudit.stats` (import the public names from there)."""
