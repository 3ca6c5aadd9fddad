"""lclusterd: a lightweight Linux job container runner."""

__version__ = "0.1.0"
