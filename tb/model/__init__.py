"""Python reference models (the scoreboards the RTL is checked against)."""

from .translation import Context, Memory, Request, Result, TranslationModel, translate

__all__ = ["Context", "Memory", "Request", "Result", "TranslationModel", "translate"]
