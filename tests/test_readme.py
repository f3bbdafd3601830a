"""The README's promises that a test can keep: its PyTorch loop runs as printed, and trains."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_pytorch_loop_runs_and_learns(capsys):
    text = README.read_text()
    section = text[text.index("## In your own PyTorch loop") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"loss (-?[\d.]+)", out)]
    top1 = float(re.search(r"kNN top-1 on the 500 held-out images: ([\d.]+)", out)[1])
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert top1 > 0.2  # 10 classes: chance is 0.1; after 5 epochs it is still near random init (0.27, see The demo)
