"""Build src/simsiam/data/demo/cifar10_demo.npz from a CIFAR-10 JPEG folder (one subfolder per class).

Usage: python tools/make_demo.py ../shared/data/cifar10/val

The demo keeps each file's JPEG bytes as they are (no re-encoding), so the
5,000 images cost about 5 MB.
"""

import sys
from pathlib import Path

import numpy as np

root = Path(sys.argv[1])
classes = sorted(d.name for d in root.iterdir() if d.is_dir())
blobs, labels = [], []
for label, name in enumerate(classes):
    for f in sorted((root / name).glob("*.jpg")):
        blobs.append(f.read_bytes())
        labels.append(label)
offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
out = Path(__file__).resolve().parents[1] / "src" / "simsiam" / "data" / "demo" / "cifar10_demo.npz"
np.savez(
    out,
    jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8),
    offsets=offsets,
    labels=np.array(labels, dtype=np.int16),
    classes=np.array(classes),
)
print(f"{out}: {len(blobs)} images, {out.stat().st_size / 1e6:.1f} MB")
