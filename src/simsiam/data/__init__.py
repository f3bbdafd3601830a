"""Files to uint8 batches: the image sources, one file's decoding, the decoded cache, and the one batch source.

Imports neither the config nor Lightning. See docs/design.md for the way of one batch.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ImageSet": "simsiam.data.sources",
    "DataError": "simsiam.errors",
    "SkippedImagesWarning": "simsiam.data.folder",
    "load": "simsiam.data.sources",
    "load_folder": "simsiam.data.sources",
    "load_cifar": "simsiam.data.sources",
    "load_demo": "simsiam.data.sources",
    "list_images": "simsiam.data.folder",
    "is_run_folder": "simsiam.data.folder",
    "cache_dir": "simsiam.files",
    "decode_image": "simsiam.data.decode",
    "show_path": "simsiam.files",
    "channel_stats": "simsiam.data.sources",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
