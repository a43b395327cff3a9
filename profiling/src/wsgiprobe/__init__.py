"""Runtime toolkit installed next to the app (import name ``wsgiprobe``, see DESIGN.md)."""

__version__ = "0.1.0"
