"""The two-dimensional translation path: guest IA-32e paging crossed with EPT."""

from .unit import TranslationUnit

__all__ = ["TranslationUnit"]
