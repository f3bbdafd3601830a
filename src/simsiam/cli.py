"""The ``simsiam`` command: the parser, ``simsiam train``, and one line for every error.

The commands that read a checkpoint (evaluate, embed, neighbors, map, export) are in :mod:`simsiam.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from simsiam.commands import COMMANDS as CHECKPOINT_COMMANDS
from simsiam.commands import EMBED_EXTENSIONS, EVAL_EXTENSIONS, FIGURE_EXTENSIONS, POSITIVE, RANGES
from simsiam.errors import ConfigError, SimSiamError, TrainingInterrupted
from simsiam.files import os_error_text
from simsiam.options import add_output_flags

__all__ = ["main", "build_parser", "train_config"]
# The commands that read a checkpoint live in simsiam.commands; their constants are re-exported here.
__all__ += ["EVAL_EXTENSIONS", "EMBED_EXTENSIONS", "FIGURE_EXTENSIONS", "RANGES", "POSITIVE"]


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from simsiam.config.schema import TrainConfig
    from simsiam.options import add_flags

    p.description = (
        "Pretrain an encoder with SimSiam on a folder of images. Options are taken, lowest first, from the field "
        "defaults, a --recipe, a --config file and the flags typed here."
    )
    p.add_argument("data", nargs="?", metavar="DATA", help="image folder, or CIFAR-10 python batches (default: the bundled demo set)")
    p.add_argument("--config", metavar="FILE", help="YAML file of options, as in a run folder's config.yaml (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the latest for this data) from its last checkpoint")
    add_output_flags(p)
    add_flags(p, TrainConfig)
    p.set_defaults(handler=_train)


def train_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, str], str | None]:
    """The config `simsiam train` runs with: (config, the options typed, their names as typed, a note to print).

    Flags over a --config file over a recipe (named, or the default for this
    machine: the demo without DATA, the CPU-sized network on a CPU).
    """
    from simsiam.config.layers import check, check_init_weights, check_networks, check_paths, layered, load_yaml
    from simsiam.config.recipes import default_recipe
    from simsiam.config.schema import TrainConfig
    from simsiam.options import flatten, given_flags
    from simsiam.system import uses_gpu

    flags = given_flags(args, TrainConfig)
    if args.data is not None:
        flags["data"] = args.data
    try:
        file_values = load_yaml(args.config) if args.config is not None else {}
    except ConfigError as e:  # the file itself: missing, unreadable, not YAML (its keys are named below, with the file)
        raise e.named("--config") from None
    # A typed --accelerator gpu without a GPU is refused here; a config file's value is checked with the run's other options.
    on_gpu = uses_gpu(flags.get("accelerator") or ("cpu" if file_values.get("accelerator") == "cpu" else "auto"))
    auto, note = (None, None) if args.resume else default_recipe({**flatten(file_values), **flags}, on_gpu)
    cfg, names = layered(flags, file_values, args.config or "config", auto_recipe=auto)
    check(cfg, names)
    check_paths(cfg, names)  # the paths typed or in --config; a checkpoint's own are checked where they are used
    if not args.resume:
        check_networks(cfg, names)  # with --image-size known, before DATA is decoded
        check_init_weights(cfg, names)  # the file fits the backbone, before DATA is decoded
    return cfg, flags, names, note


def _train(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only  # under DDP every process runs this; rank 0 speaks

    from simsiam.train.run import fit

    cfg, flags, names, note = train_config(args)
    if note:
        rank_zero_only(print)(note)
    try:
        result = fit(cfg, resume=args.resume, overrides=flags, progress=args.progress)
    except ConfigError as e:  # found once the data is known: name the option as it was given
        raise e.named(names.get(e.key) or e.key) if e.key else e from None
    rank_zero_only(_print_result)(result)
    return 0


def _print_result(result: dict[str, Any]) -> None:
    if result.get("already_finished"):  # fit() said so and how to train longer
        return
    print(f"done: {result['epochs']} epochs in {result['wall_seconds']:.0f} s, run folder {result['run_folder']}")
    if result.get("knn_top1") is not None:
        init = result.get("knn_top1_random_init")
        gain = "" if init is None else f"  (random init: {init:.4f}, gain {100 * (result['knn_top1'] - init):+.1f} points)"
        print(f"kNN top-1, final epoch: {result['knn_top1']:.4f}{gain}")
        print(f"kNN top-1, best epoch:  {result['knn_top1_max']:.4f}")
    print(f"loss {result['final_loss']:.4f}, z_std {result['final_z_std']:.4f}, {result['mean_images_per_s']:.0f} images/s on average")


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad command line answered in one line (no usage block), exit status 2.

    Abbreviations are refused (``--epoch 2`` is not ``--epochs 2``: a typo must not
    become another option), and a flag that is not known names the closest one.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def parse_known_args(self, args=None, namespace=None):
        self._words = list(sys.argv[1:] if args is None else args)  # for the close match of an unknown flag
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        import re

        # "argument --loss: invalid choice: 'x' (choose from 'a', 'b')" in the words our own checks use
        if found := re.fullmatch(r"argument (\S+): invalid choice: (.+) \(choose from (.+)\)", message):
            message = f"{found[1]}: must be one of {found[3].replace(chr(39), '')}, got {found[2]}"
        elif found := re.fullmatch(r"unrecognized arguments: (.+)", message):
            parser = self._command_parser()
            parser.exit(2, f"{parser.prog}: error: {self._unknown(found[1].split(), parser)} (see {parser.prog} --help)\n")
        else:
            message = re.sub(r"^argument (\S+): ", r"\1: ", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    @staticmethod
    def _unknown(words: list[str], parser: argparse.ArgumentParser) -> str:
        """'--batchsize: not an option; did you mean --batch-size?' for the first unknown flag, else argparse's words."""
        from simsiam.options import closest

        flag = next((w.split("=", 1)[0] for w in words if w.startswith("-")), None)
        if flag is None:
            return f"unrecognized arguments: {' '.join(words)}"
        guess = closest(flag, [o for o in parser._option_string_actions if o.startswith("--")])
        return f"{flag}: not an option" + (f"; did you mean {guess}?" if guess else "")

    def _command_parser(self) -> argparse.ArgumentParser:
        """The subcommand's parser the words name (unknown flags are found by the top-level parser), or this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word in getattr(self, "_words", []):
                    if word in action.choices:
                        return action.choices[word]
        return self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``simsiam`` parser; with ``only``, that command's options alone (the others keep their one-line help).

    A run builds just the options of its own command: nothing of the other
    commands runs, and ``simsiam --help`` lists them all from their names and help.
    """
    from simsiam import __version__

    parser = _Parser(prog="simsiam", description="SimSiam self-supervised pretraining, evaluation and export.")
    parser.add_argument("--version", action="version", version=f"simsiam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=summary)
        if only is None or only == name:
            arguments(p)
    return parser


# Every command, in the order `simsiam --help` lists them: name -> (one-line help, its arguments).
COMMANDS = {"train": ("pretrain an encoder with SimSiam", _train_arguments), **CHECKPOINT_COMMANDS}


def _report(command: str, e: Exception) -> int:
    """One line on stderr for an error, and the exit status: 2 bad input, 130 interrupted, 1 a bug."""
    if isinstance(e, ConfigError) and e.key:  # a library parameter: name it as the flag a user types
        from simsiam.config.schema import TrainConfig
        from simsiam.options import flag_of

        e = e.named(flag_of(TrainConfig, e.key) or "--" + e.key.replace("_", "-"))
    if isinstance(e, SimSiamError):
        print(f"simsiam {command}: error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, TrainingInterrupted):
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank == 0:  # under DDP every process stops with the same message
            print(f"simsiam {command}: {e}", file=sys.stderr)
        return 130
    if isinstance(e, OSError):  # a full disk, a read-only folder, a file gone missing: name it
        where = f"{e.filename}: " if e.filename else ""
        print(f"simsiam {command}: error: {where}{os_error_text(e)}", file=sys.stderr)
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
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=next((w for w in words if w in COMMANDS), ""))
    try:
        args = parser.parse_args(words)
    except SystemExit as e:  # --help (0) ends here too; a bad command line has been printed as one line
        if e.code == 0:
            raise
        return int(e.code or 2)
    _quiet_libraries()
    # File names that are not valid UTF-8 reach Python as lone surrogates; print them
    # escaped rather than fail with UnicodeEncodeError halfway through a run.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    handler: Callable[[argparse.Namespace], int] = args.handler
    args.progress = not (args.quiet or args.no_progress)
    try:
        if not args.quiet:
            return handler(args)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # warnings and errors only: stderr
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
