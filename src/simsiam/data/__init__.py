"""Files to uint8 batches: the image sources, one file's decoding, the decoded cache, and the one batch source.

Imports neither the config nor Lightning. See docs/design.md for the way of one batch.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

from functools import partial

from simsiam import lazy

# Where decoded images may be kept while training (--data-on; simsiam.data.batches.placement decides),
# and how a folder's cache entry holds them (--cache-format).
DATA_ON = ("auto", "gpu", "memory", "disk")
CACHE_FORMATS = ("auto", "raw", "jpeg")

_HOMES = {
    "ImageSet": "simsiam.data.sources",
    "DataError": "simsiam.errors",
    "SkippedImagesWarning": "simsiam.data.folder",
    "load": "simsiam.data.sources",
    "DataOptions": "simsiam.data.folder",
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
__all__ = ["DATA_ON", "CACHE_FORMATS", *_HOMES]
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562: a name's module is imported on first use
__dir__ = partial(lazy.names, __name__, _HOMES)
