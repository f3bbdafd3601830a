"""Image files to uint8 tensors: Pillow on the CPU, nvJPEG on the GPU for folders of JPEGs.

This module is the decoding's public face; the work is done, in order of
dependence, by :mod:`simsiam.guards` (regular files, the pixel limit),
:mod:`simsiam.stacks` (arrays and multi-page TIFFs of bands),
:mod:`simsiam.image_file` (one file: :func:`decode_image`),
:mod:`simsiam.cifar` (CIFAR-10 python files) and :mod:`simsiam.bulk_decode`
(many files, a chunk at a time).

Decoding uses Pillow (torchvision's own image datasets use it too): it reads every
format people keep images in (BMP and TIFF included), applies EXIF rotation,
converts palette, CMYK, 16-bit, float and alpha images to RGB, and decodes large
JPEGs at a reduced scale (``draft``), which is most of the cost on big photos.
Every image is resized (shorter side to S) and centre-cropped to S x S.

Images of other channel counts (:func:`decode_image`'s ``channels``):

- one channel: any image file read as one grey channel (colour images as their
  luma, ITU-R 601, as Pillow's ``convert("L")``);
- multispectral stacks of C bands: ``.npy`` arrays and ``.npz`` archives of one
  array, H x W x C (or H x W for one band), uint8 or uint16, and multi-page TIFFs
  with one 8- or 16-bit grey band per page. Each band is resized as an image is.

16-bit values (uint16 arrays, 16-bit TIFF pages and one-channel 16-bit images)
become 8-bit by one fixed rule, the same for every file: x * 255 / 65535, rounded
(``round(x / 257)``), so a band value means the same in every image of a folder.
The format is recognised from the file's first bytes, not its name.

What is never done, whatever DATA holds:

- a file that is not a regular file (a FIFO, a device, a socket) is never opened
  (opening a FIFO blocks until someone writes to it); it is named and skipped;
- an image that declares more than :data:`MAX_PIXELS` pixels is refused from its
  header, before anything is allocated for it (a 100-byte PNG can declare
  30000 x 30000 pixels: 2.7 GB decoded); a stack, likewise, above MAX_PIXELS
  pixels a band, :data:`MAX_CHANNELS` bands (a TIFF's pages are counted to
  MAX_CHANNELS + 1, no further) or :data:`MAX_IMAGE_BYTES` bytes of values;
- an array file is read with ``allow_pickle=False`` (never as Python objects),
  only after its header's dtype, shape and size were checked, and only when the
  file holds as many bytes as the header declares;
- a CIFAR-10 python batch is unpickled with an unpickler that admits only the
  types the format uses (dicts, lists, bytes, str, numbers, numpy arrays of
  plain dtypes): reading DATA never runs code;
- nothing about Pillow's global state is changed.

Every failure is one :class:`DataError` that names the file, printable on one
line (see :func:`show_path`).
"""

from __future__ import annotations

from .bulk_decode import JPEG_EXTENSIONS, decode_all
from .cifar import read_cifar_pickle
from .guards import MAX_IMAGE_BYTES, MAX_PIXELS, open_regular
from .image_file import channels_of, decode_image, image_size_of
from .io import show_path
from .stacks import MAX_CHANNELS, STACK_EXTENSIONS

__all__ = [
    "MAX_PIXELS",
    "MAX_IMAGE_BYTES",
    "decode_image",
    "decode_files",
    "image_size_of",
    "open_regular",
    "read_cifar_pickle",
    "show_path",
]
__all__ += ["MAX_CHANNELS", "channels_of", "STACK_EXTENSIONS", "JPEG_EXTENSIONS"]


# Decoding a whole list into one tensor: the bulk path, under its public name.
decode_files = decode_all
