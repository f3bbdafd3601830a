"""The layout's figures: how the package is cut, what `import simsiam` loads, what one training run touches.

Usage: python tools/layout_figures.py [--skip-train]

Prints, for src/simsiam:

- subpackages, top-level modules, and the longest module (lines);
- the simsiam modules that ``import simsiam`` loads, and whether Lightning,
  the config, the cache or the decoders are among them;
- the simsiam modules whose functions run during a 1-epoch ``simsiam train`` on a
  small folder (a profiler over every thread), and of those the modules that a
  batch passes through on its way from indices to the loss: every function that
  runs with ``Batches.__iter__`` (the batch source) or ``training_step`` (views,
  model, loss) on its stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "simsiam"


def shape() -> None:
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    top = sorted(p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__"))
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    longest = max(lines, key=lines.get)
    print(f"subpackages: {len(subpackages)} ({', '.join(subpackages) or 'none'})")
    print(f"top-level modules: {len(top)}; all modules: {len(lines)}; longest: {longest} ({lines[longest]} lines)")


IMPORT_PROBE = """
import sys
import simsiam
mods = sorted(m for m in sys.modules if m == "simsiam" or m.startswith("simsiam."))
print(len(mods))
print(" ".join(mods))
print("lightning" in sys.modules)
"""


def light_import() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout.split("\n")
    heavy = [m for m in out[1].split() if any(w in m for w in ("config", "cache", "decode", "train", "cli"))]
    print(f"`import simsiam` loads {out[0]} simsiam modules: {out[1]}")
    print(f"  Lightning loaded: {out[2]}; config, cache, decoders or training among them: {heavy or 'none'}")


TRAIN_PROBE = """
import sys, threading
from pathlib import Path

package = {package!r}
ran, on_path = set(), set()
PATH_FUNCTIONS = ("__iter__", "training_step")


def module_of(code):
    f = code.co_filename
    if not f.startswith(package):
        return None
    return f[len(package) + 1 :]


def profile(frame, event, arg):
    if event != "call":
        return
    name = module_of(frame.f_code)
    if name is None or frame.f_code.co_name == "<module>":  # functions, not the bodies of modules being imported
        return
    ran.add(name)
    f = frame
    while f is not None:
        code = f.f_code
        module = module_of(code)
        if module is not None and (code.co_name == "training_step" or (code.co_name == "__iter__" and "Batches" in code.co_qualname)):
            on_path.add(name)
            break
        if code.co_name == "work" and module is not None and module.endswith("batches.py"):  # the prefetch thread reads for a batch
            on_path.add(name)
            break
        f = f.f_back


threading.setprofile(profile)
sys.setprofile(profile)
from simsiam.cli import main

code = main(["train", {data!r}, "--epochs", "1", "--out", {out!r}, "--quiet", "--batch-size", "16", "--knn-k", "5"])
sys.setprofile(None)
threading.setprofile(None)
print(code)
print(" ".join(sorted(ran)))
print(" ".join(sorted(on_path)))
"""


def one_epoch() -> None:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (data / c).mkdir(parents=True)
            for i in range(40):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / c / f"{i}.png")
        script = TRAIN_PROBE.format(package=str(PACKAGE), data=str(data), out=str(Path(tmp) / "run"))
        env = {**os.environ, "SIMSIAM_CACHE": str(Path(tmp) / "cache")}
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, cwd=tmp)
        lines = done.stdout.strip().split("\n")
        if done.returncode != 0 or len(lines) < 3 or lines[-3] != "0":
            raise SystemExit(f"the 1-epoch run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        ran, path = lines[-2].split(), lines[-1].split()
        print(f"1-epoch `simsiam train`: functions ran in {len(ran)} simsiam modules: {' '.join(ran)}")
        print(f"  a batch from indices to the loss passes {len(path)} modules: {' '.join(path)}")


if __name__ == "__main__":
    shape()
    light_import()
    if "--skip-train" not in sys.argv:
        one_epoch()
