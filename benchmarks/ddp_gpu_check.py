"""GPU check of DDP with synchronized batch norm, on a machine with one GPU.

    python benchmarks/ddp_gpu_check.py          # about 30 s on a GPU; exits 1 if a check fails
    python benchmarks/ddp_gpu_check.py --cpu    # the same plumbing on CPU with plain BN (tests this script)

Two processes share the one GPU for one epoch of the demo recipe on the bundled
demo set, started by torchrun as `simsiam train` would be on a real cluster.
Lightning gives each process the GPU of its LOCAL_RANK and wants one GPU per
process, so each process presents itself as the single process of its own node
(`--devices 1 --num-nodes 2`, LOCAL_RANK=0, GROUP_RANK=RANK). NCCL refuses two
ranks on one GPU, so the process group uses gloo, which takes CUDA tensors and for
which torch's SyncBatchNorm has its own path.

At the end of training every process records its weights and runs a probe: a
fresh copy of the model's first BN layer, in training mode, normalises a batch
that is all 0 on rank 0 and all 1 on rank 1. Synchronized, the batch mean is 0.5
and the outputs are -1 and +1; per process they are 0 and 0.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def worker(record: Path, argv: list[str]) -> int:
    os.environ["GROUP_RANK"] = os.environ["RANK"]  # before Lightning reads them: one "node" per process
    os.environ["LOCAL_RANK"] = "0"
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    import lightning as L
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    from simsiam.cli import build_parser, train_config
    from simsiam.train import fit

    torch.distributed.Backend.default_device_backend_map["cuda"] = "gloo"  # Lightning picks the backend from this map

    class Probe(L.Callback):
        def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            rank = trainer.global_rank
            bn = copy.deepcopy(next(m for m in module.model.modules() if isinstance(m, _BatchNorm)))
            bn.reset_parameters()
            bn.train()
            with torch.no_grad():
                probe = bn(torch.full((4, bn.num_features, 2, 2), float(rank), device=module.device)).mean().item()
            torch.save(
                {
                    "device": str(module.device),
                    "sync_bn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.model.modules()),
                    "bn_class": type(bn).__name__,
                    "probe": probe,
                    "state": {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()},
                },
                record / f"rank{rank}.pt",
            )
            trainer.strategy.barrier()  # both files exist before rank 0 returns

    args = build_parser().parse_args(argv)
    cfg, flags, _, _ = train_config(args)
    fit(cfg, resume=args.resume, overrides=flags, progress=not args.quiet, callbacks=[Probe()])
    return 0


def check(cpu: bool, timeout: float) -> int:
    import torch

    if not cpu and not torch.cuda.is_available():
        print("FAIL: no GPU visible (use --cpu to test the plumbing without one)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="simsiam-ddp-check-"))
    record = work / "record"
    record.mkdir()
    train = ["train", "--recipe", "demo", "--epochs", "1", "--devices", "1", "--num-nodes", "2", "--no-compile", "--quiet"]
    train += ["--out", str(work / "run")] + (["--accelerator", "cpu", "--batch-size", "64"] if cpu else [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [__file__, "--worker", str(record), "--", *train]
    env = dict(os.environ, SIMSIAM_CACHE=str(work / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    output = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with subprocess.Popen(command, env=env, cwd=work, start_new_session=True, **output) as proc:
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
            log, _ = proc.communicate()
            print(log[-6000:])
            print(f"FAIL: the two-process run did not finish in {timeout:.0f} s (a deadlock?)")
            return 1
    seconds = time.perf_counter() - started
    print(log[-6000:])
    if proc.returncode != 0:
        print(f"FAIL: the two-process run exited with {proc.returncode} after {seconds:.0f} s")
        return 1

    ranks = [torch.load(record / f"rank{r}.pt", weights_only=False) for r in range(2)]
    a, b = ranks[0]["state"], ranks[1]["state"]
    params = {k for k in a if "running_" not in k and "num_batches_tracked" not in k}
    buffers = set(a) - params

    def max_diff(keys: set[str]) -> str:
        return f"max |diff| {max(((a[k].float() - b[k].float()).abs().max().item() for k in keys), default=0.0):.3g}"

    said = next((line for line in log.splitlines() if line.startswith("distributed:")), "(no 'distributed:' line)")
    probes = [r["probe"] for r in ranks]
    findings = [
        (
            "both processes trained on the " + ("CPU" if cpu else "one GPU"),
            [r["device"] for r in ranks],
            all(r["device"].startswith("cpu" if cpu else "cuda") for r in ranks),
        ),
        (
            "the log says BN is " + ("not synchronized" if cpu else "synchronized"),
            said,
            ("batch norm per process" if cpu else "batch norm synchronized across processes") in said,
        ),
        ("BN layers are " + ("plain" if cpu else "SyncBatchNorm"), [r["bn_class"] for r in ranks], all(r["sync_bn"] != cpu for r in ranks)),
        (
            "BN probe: -1 and +1 when synchronized, 0 and 0 when not",
            [round(p, 4) for p in probes],
            max(map(abs, probes)) < 1e-3 if cpu else probes[0] < -0.9 and probes[1] > 0.9,
        ),
        ("parameters agree on both ranks", max_diff(params), all(torch.equal(a[k], b[k]) for k in params)),
        ("BN running statistics agree on both ranks", max_diff(buffers), all(torch.equal(a[k], b[k]) for k in buffers)),
        ("finished within 60 s", f"{seconds:.1f} s", seconds < 60 or cpu),  # two shared CPU cores are slower
    ]
    for name, value, ok in findings:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value}")
    passed = all(ok for *_, ok in findings)
    print("PASS" if passed else "FAIL", f"({'CPU dry run, plain BN' if cpu else 'one GPU shared by 2 processes, gloo, SyncBatchNorm'})")
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(worker(Path(sys.argv[2]), sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU with plain BN, to test this script without a GPU")
    parser.add_argument("--timeout", type=float, default=240, help="seconds before the run counts as hung")
    args = parser.parse_args()
    sys.exit(check(args.cpu, args.timeout))
