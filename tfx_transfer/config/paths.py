"""Where the toolkit keeps what it can make again: converted weights, built-in data, cached features.

Example:
    >>> cache_dir().name  # doctest: +SKIP
    'tfx_transfer'
"""

from __future__ import annotations

import os
from pathlib import Path

#: Overrides the cache folder (the tests point it at a temporary folder).
CACHE_ENV = "TFX_TRANSFER_CACHE"


def cache_dir() -> Path:
    """The toolkit's cache: `$TFX_TRANSFER_CACHE`, else `$XDG_CACHE_HOME/tfx_transfer`, else
    `~/.cache/tfx_transfer`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tfx_transfer"
