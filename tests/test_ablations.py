"""The paper's ablations (section 4.1 and Table 1a), on CPU: without the stop-gradient,
or without the predictor, SimSiam collapses; with both it does not."""

import csv
import warnings

import pytest

from simsiam.cli import main
from simsiam.train.callbacks import CollapseWarning

# Demo images, a tiny network and a high lr, so that collapse shows within ~150 steps.
SETTING = ["--epochs", "2", "--batch-size", "64", "--lr", "2.0", "--backbone", "resnet10-slim", "--proj-dim", "64",
           "--pred-hidden-dim", "16", "--knn-every", "0", "--seed", "0", "--no-progress"]  # fmt: skip


def run(tmp_path, name, *extra):
    out = tmp_path / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--out", str(out), *SETTING, *extra]) == 0
    with open(out / "metrics.csv") as fh:
        last = list(csv.DictReader(fh))[-1]
    collapse_warned = any(issubclass(w.category, CollapseWarning) for w in caught)
    return float(last["loss"]), float(last["collapse"]), collapse_warned


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ablation"), "simsiam")


def test_simsiam_does_not_collapse(baseline):
    loss, level, warned = baseline
    assert level > 0.8 and not warned, baseline
    assert loss > -0.8, baseline


@pytest.mark.parametrize("flag", ["--no-stop-gradient", "--no-predictor"])
def test_ablation_collapses(tmp_path, baseline, flag):
    loss, level, warned = run(tmp_path, flag.strip("-"), flag)
    assert warned, "the collapse monitor said nothing"
    assert level < 0.6 and level < 0.7 * baseline[1], (level, baseline)
    assert loss < -0.75 and loss < baseline[0] - 0.15, (loss, baseline)  # toward the minimum, -1


def test_symmetrized_cross_entropy_trains_without_collapse(tmp_path):
    loss, level, warned = run(tmp_path, "cross_entropy", "--loss", "cross_entropy")
    assert level > 0.8 and not warned, (loss, level)
