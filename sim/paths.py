"""Where things are: the repository and the build root (every other part of `sim` imports this
module; it imports nothing of `sim`)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "resolve_build_root"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_build_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The build directory: `root` if given (relative paths are taken from the repo root), else
    ``$VTX_BUILD_ROOT``, else ``<repo>/build``."""
    if root is None:
        root = os.environ.get("VTX_BUILD_ROOT") or "build"
    path = Path(root)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path
