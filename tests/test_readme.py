"""The README's promises that a test can keep: its PyTorch loop runs as printed, and trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def _command_lines(text: str) -> list[list[str]]:
    """Every `simsiam ...` command in the README's code (fenced blocks and indented lines), as argv after 'simsiam'."""
    import shlex

    fenced = re.findall(r"(?ms)^```(\w*)\n(.*?)^```", text)  # opening and closing fences paired, in order
    blocks = [body for lang, body in fenced if lang in ("", "bash")] + re.findall(r"(?m)^    (\S.*(?:\\\n.*)*)$", text)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            words = shlex.split(line) if "simsiam" in line else []
            starts = [i for i, w in enumerate(words) if w.endswith("simsiam") and i + 1 < len(words)]
            if starts and not words[starts[0] + 1].startswith(("-", "[")) or starts and words[starts[0] + 1] == "--version":
                commands.append(words[starts[0] + 1 :])
    return commands


def test_every_command_in_the_readme_is_one_the_cli_takes(capsys):
    """Flags that no longer exist, or misspelled, would be one line and exit 2: parse every command shown."""
    from simsiam.cli import build_parser

    commands = _command_lines(README.read_text())
    assert len(commands) >= 15 and {c[0] for c in commands} >= {"train", "evaluate", "embed", "neighbors", "map", "export"}
    parser = build_parser()
    for argv in commands:
        if argv == ["--version"]:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"README: simsiam {' '.join(argv)}: {capsys.readouterr().err.strip()} (exit {e.code})")


def test_the_readme_demo_recipe_is_the_code_s():
    from simsiam.config.recipes import RECIPES

    text = README.read_text()
    demo = RECIPES["demo"]
    assert f"a small batch ({demo['batch_size']}) and a high base lr ({demo['optim']['base_lr']}" in text
    assert f"so that {demo['epochs']} epochs" in text and f"kNN with k={demo['knn_k']}" in text
    assert f"resnet10-tiny, batch {RECIPES['cpu']['batch_size']}, base lr {RECIPES['cpu']['optim']['base_lr']}" in text
