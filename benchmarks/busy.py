"""Training on a machine that is doing something else: the demo beside N busy processes vs quiet.

    python benchmarks/busy.py                  # quiet, then beside 4 busy processes, then quiet again
    python benchmarks/busy.py --busy 2 4       # beside 2, then beside 4

Each row is one `simsiam train` on the bundled demo set (the demo network, float32,
no kNN), its images/s per epoch read from the run's metrics.csv. A busy process is
`yes > /dev/null`: one thread that never sleeps, as a build, a browser tab or
another job would be.

The fair share is what the scheduler owes the run: with T threads of the run and N
busy processes on C cores, each runnable thread gets C / (T + N) of a core, so the
run keeps C / (T + N) of its quiet speed (T is the thread count of the quiet run,
torch's default of one per core; 2 cores beside 4 busy processes: a third). The
table gives the median and slowest of epochs 2 to the last (the first builds the
data and warms up) against the quiet rate and against that fair share. The quiet
rows run before and after the busy ones, so drift of the machine shows.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import cpu_model  # noqa: E402

SIMSIAM = [sys.executable, "-m", "simsiam.cli"]


def epoch_rates(epochs: int, extra: list[str], env: dict[str, str]) -> list[float]:
    """images/s of each epoch of one demo run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [*SIMSIAM, "train", "--epochs", str(epochs), "--knn-every", "0", "--quiet", "--out", str(out), *extra]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(out / "metrics.csv") as f:
            return [float(row["images_per_s"]) for row in csv.DictReader(f)]


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[4], help="busy processes beside the run, one row each")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, help="the run's threads when quiet, for the fair share (default: one per core)")
    parser.add_argument("extra", nargs="*", help="more `simsiam train` options, after --")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    print(f"{cpu_model()}; load average {os.getloadavg()[0]:.2f} before the run; demo, {args.epochs} epochs per row\n", flush=True)

    rows = []  # (name, epoch rates, busy count)

    def run(name: str, busy: int) -> None:
        procs = busy_processes(busy)
        try:
            time.sleep(0.5 if busy else 0)
            rates = epoch_rates(args.epochs, args.extra, env)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        rows.append((name, rates, busy))
        print(f"{name}: " + ", ".join(f"{r:,.0f}" for r in rates) + " images/s per epoch", flush=True)

    run("quiet", 0)
    for n in args.busy:
        run(f"beside {n} busy", n)
    run("quiet again", 0)

    quiet = statistics.median([r for name, rates, busy in rows if busy == 0 for r in rates[1:]])
    print(f"\nquiet rate (median of the quiet rows' epochs 2-{args.epochs}): {quiet:,.0f} images/s; {cores} cores, {threads} threads\n")
    width = max(len(name) for name, _, _ in rows)
    print(
        f"{'run'.ljust(width)}  {'median':>8}  {'slowest':>8}  {'fair share':>10}  {'median/fair':>11}  {'slowest/fair':>12}  {'vs quiet':>8}"
    )
    for name, rates, busy in rows:
        timed = rates[1:]
        med, low = statistics.median(timed), min(timed)
        fair = quiet * min(1.0, cores / (threads + busy))
        print(
            f"{name.ljust(width)}  {med:>8,.0f}  {low:>8,.0f}  {fair:>10,.0f}  {med / fair:>10.0%}  {low / fair:>11.0%}  {med / quiet:>7.2f}x"
        )


if __name__ == "__main__":
    main()
