"""The ``simsiam`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any, Callable

# Flags of `simsiam train`: flag -> (config key, argparse options). Dotted keys are
# nested sections of TrainConfig; every default is "not given" so that the flags
# override only what the user typed (over a --recipe and a --config file).
TRAIN_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--out": ("out", dict(metavar="DIR", help="run folder (default: runs/<data name>, numbered if taken)")),
    "--val": ("val", dict(metavar="DATA", help="labeled images for the online kNN (default: hold out --held-out of DATA)")),
    "--recipe": ("recipe", dict(help="a named setting: cifar10 (paper, appendix D), imagenet (paper, section 4), demo")),
    "--epochs": ("epochs", dict(type=int)),
    "--batch-size": ("batch_size", dict(type=int, help="global batch over all processes")),
    "--backbone": ("model.backbone", dict(help="resnet18 | resnet34 | resnet50 | resnet10-slim")),
    "--image-size": ("image_size", dict(type=int, help="training resolution (default: the data's, at most 224)")),
    "--small-images": ("model.small_images", dict(action=argparse.BooleanOptionalAction, help="3x3 stride-1 stem, no max-pool (default: at 64 px or less)")),
    "--proj-dim": ("model.proj_dim", dict(type=int)),
    "--proj-layers": ("model.proj_layers", dict(type=int)),
    "--pred-hidden-dim": ("model.pred_hidden_dim", dict(type=int)),
    "--no-stop-gradient": ("model.stop_gradient", dict(action="store_false", help="ablation: collapses (paper, section 4.1)")),
    "--no-predictor": ("model.predictor", dict(action="store_false", help="ablation: collapses (paper, Table 1a)")),
    "--loss": ("optim.loss", dict(choices=["cosine", "cross_entropy"])),
    "--lr": ("optim.base_lr", dict(type=float, help="base lr; the lr is base_lr x batch / 256")),
    "--weight-decay": ("optim.weight_decay", dict(type=float)),
    "--warmup-epochs": ("optim.warmup_epochs", dict(type=float)),
    "--fixed-predictor-lr": ("optim.fixed_predictor_lr", dict(action="store_true", help="do not decay the predictor's lr (paper, Table 1)")),
    "--blur": ("augment.blur_p", dict(type=float, metavar="P", help="Gaussian blur probability")),
    "--solarize": ("augment.solarize_p", dict(type=float, metavar="P", help="solarization probability")),
    "--vflip": ("augment.vflip_p", dict(type=float, metavar="P", help="vertical flip probability (no canonical orientation)")),
    "--rotate": ("augment.rotate", dict(choices=["none", "90", "free"], help="random rotation (no canonical orientation)")),
    "--min-scale": ("augment.min_scale", dict(type=float, help="smallest crop area fraction")),
    "--held-out": ("held_out", dict(type=float, help="fraction of labeled DATA kept for the online kNN")),
    "--knn-k": ("knn_k", dict(type=int)),
    "--knn-temperature": ("knn_temperature", dict(type=float)),
    "--knn-every": ("knn_every", dict(type=int, help="epochs between online kNN evaluations (0: never)")),
    "--seed": ("seed", dict(type=int)),
    "--accelerator": ("accelerator", dict(choices=["auto", "cpu", "gpu"])),
    "--devices": ("devices", dict(type=lambda s: s if s == "auto" else int(s), help="processes per node (GPUs)")),
    "--num-nodes": ("num_nodes", dict(type=int)),
    "--precision": ("precision", dict(help="Lightning precision, e.g. bf16-mixed, 16-mixed, 32-true")),
    "--compile": ("compile", dict(action=argparse.BooleanOptionalAction, help="torch.compile the step (default: on GPU)")),
    "--channels-last": ("channels_last", dict(action=argparse.BooleanOptionalAction)),
    "--no-sync-batchnorm": ("sync_batchnorm", dict(action="store_false", help="plain BN per process under DDP")),
    "--checkpoint-every": ("checkpoint_every", dict(type=int, metavar="N", help="save checkpoints/last.ckpt every N epochs (and at the end)")),
    "--log-every": ("log_every", dict(type=int, help="steps between reads of the loss")),
    "--strict": ("strict", dict(action="store_true", help="stop at the first file that cannot be decoded")),
}


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    for s in sections:
        values = values.setdefault(s, {})
    values[key] = value


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain an encoder with SimSiam", description="Pretrain an encoder with SimSiam on a folder of images.")
    p.add_argument("data", nargs="?", metavar="DATA", help="image folder, or CIFAR-10 python batches (default: the bundled demo set)")
    p.add_argument("--config", metavar="FILE", help="YAML file of options (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the latest for this data) from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for flag, (key, options) in TRAIN_FLAGS.items():
        p.add_argument(flag, dest=key, default=argparse.SUPPRESS, **options)
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    import torch
    from lightning.pytorch.utilities import rank_zero_only  # under DDP every process runs this; rank 0 speaks

    from .config import TrainConfig, load_yaml, recipe
    from .engine import fit

    given = {key: getattr(args, key) for key, _ in TRAIN_FLAGS.values() if hasattr(args, key)}
    values: dict[str, Any] = {}
    for key, value in given.items():
        _set(values, key, value)
    if args.data is not None:
        values["data"] = args.data

    file_values = load_yaml(args.config) if args.config else {}
    name = values.get("recipe") or file_values.get("recipe")
    if name is None and args.data is None and file_values.get("data") is None and not args.resume and not torch.cuda.is_available():
        name = "demo"
        rank_zero_only(print)("no DATA given: training on the bundled demo set with the CPU demo recipe (see README, 'The demo')")
    cfg = TrainConfig()
    if name is not None:
        cfg = TrainConfig.from_dict(recipe(name), base=cfg, where=f"recipe {name}")
        cfg.recipe = name
    cfg = TrainConfig.from_dict(file_values, base=cfg, where=args.config or "config")
    cfg = TrainConfig.from_dict(values, base=cfg, where="options")
    from .config import validate

    validate(cfg)
    result = fit(cfg, resume=args.resume, overrides=given, progress=not args.quiet)
    rank_zero_only(_print_result)(result)
    return 0


def _print_result(result: dict[str, Any]) -> None:
    print(f"done: {result['epochs']} epochs in {result['wall_seconds']:.0f} s, run folder {result['run_folder']}")
    if result.get("knn_top1") is not None:
        init = result.get("knn_top1_random_init")
        gain = "" if init is None else f"  (random init: {init:.4f}, gain {100 * (result['knn_top1'] - init):+.1f} points)"
        print(f"kNN top-1, final epoch: {result['knn_top1']:.4f}{gain}")
        print(f"kNN top-1, best epoch:  {result['knn_top1_max']:.4f}")
    print(f"loss {result['final_loss']:.4f}, z_std {result['final_z_std']:.4f}, {result['mean_images_per_s']:.0f} images/s on average")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsiam", description="SimSiam self-supervised pretraining, evaluation and export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .engine import NonFiniteLossError, RunError

    return (ConfigError, DataError, RunError, NonFiniteLossError, CheckpointError)


def _report(command: str, e: Exception) -> int:
    """One line on stderr for an error, and the exit status: 2 bad input, 130 interrupted, 1 a bug."""
    from .engine import TrainingInterrupted

    if isinstance(e, _expected_errors()):
        print(f"simsiam {command}: error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, TrainingInterrupted):
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank == 0:  # under DDP every process stops with the same message
            print(f"simsiam {command}: {e}", file=sys.stderr)
        return 130
    if isinstance(e, OSError):  # a full disk, a read-only folder, a file gone missing: name it
        where = f"{e.filename}: " if e.filename else ""
        print(f"simsiam {command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    if os.environ.get("SIMSIAM_DEBUG"):
        raise e
    print(
        f"simsiam {command}: internal error: {type(e).__name__}: {e} "
        "(this is a bug; rerun with SIMSIAM_DEBUG=1 to see the traceback, and please report it)",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    # File names that are not valid UTF-8 reach Python as lone surrogates; print them
    # escaped rather than fail with UnicodeEncodeError halfway through a run.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"simsiam {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        return _report(args.command, e)


def _quiet_libraries() -> None:
    # Lightning's banner lines ("GPU available: False ...", tips about workers and
    # log intervals) say nothing to a simsiam user; our own log says what matters.
    import lightning  # noqa: F401  (it sets its loggers' levels on import; ours must come after)

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("default", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    # Under DDP our epoch metrics are already summed over the processes (on_train_epoch_end).
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*torch.distributed.nn.functional.all_gather is deprecated.*")  # Lightning's all_gather
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
