"""The ``simsiam`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
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
    "--precision": ("precision", dict(help="Lightning precision, e.g. bf16-mixed, 16-mixed, 32-true (default: bf16-mixed on GPU and on CPUs with AMX)")),
    "--compile": ("compile", dict(action=argparse.BooleanOptionalAction, help="torch.compile the step (default: on GPU)")),
    "--compile-mode": ("compile_mode", dict(help="torch.compile mode of the compiled step: default, reduce-overhead (CUDA graphs), max-autotune")),
    "--compile-augment": ("compile_augment", dict(action=argparse.BooleanOptionalAction, help="also torch.compile the augmentation")),
    "--channels-last": ("channels_last", dict(action=argparse.BooleanOptionalAction, help="channels_last memory format (default: on GPU, and on CPU with oneDNN)")),
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
    from .train import fit

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


# -- evaluate, embed, neighbors, map, export: commands that read a checkpoint -----------------
#
# Each loads the trained SimSiam through checkpoint.load_checkpoint, decodes DATA
# at the training resolution, and takes features from SimSiam.features (through
# evaluate.features_of, which extracts them once and can cache them).

EVAL_EXTENSIONS = (".json",)
EMBED_EXTENSIONS = (".parquet", ".npz")
FIGURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _add_checkpoint_arguments(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run folder of `simsiam train` (its checkpoints/last.ckpt) or a .ckpt file")
    if data:
        p.add_argument("data", nargs="?", metavar="DATA", help="image folder, or CIFAR-10 python batches (default: the bundled demo set)")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass when extracting features (default: 512)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto", help="where features are extracted (default: the GPU when there is one)")
    p.add_argument("--cache-features", action="store_true", help="keep the extracted features under $SIMSIAM_CACHE/features and reuse them")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="kNN and linear-probe accuracy of a trained encoder",
        description="kNN top-1 (l2-normalised features, cosine, similarity-weighted votes) and, with --linear, the top-1 "
        "of a linear probe on the frozen backbone. Both DATA sets need one subfolder per class.",
    )
    _add_checkpoint_arguments(p, data=False)
    p.add_argument("--train", required=True, metavar="DATA", help="labeled images the classifiers learn from")
    p.add_argument("--test", required=True, metavar="DATA", help="labeled images they are scored on")
    p.add_argument("--knn-k", type=int, default=200, help="neighbours that vote (default: 200)")
    p.add_argument("--knn-temperature", type=float, default=0.1, help="vote weight exp(similarity / T) (default: 0.1)")
    p.add_argument("--linear", action="store_true", help="also train and score a linear probe on the frozen features")
    p.add_argument("--linear-epochs", type=int, default=100, help="epochs of the linear probe (default: 100)")
    p.add_argument("--linear-lr", type=float, default=0.1, help="initial lr of the probe's SGD, decayed by a cosine (default: 0.1)")
    p.add_argument("--out", metavar="FILE.json", help="where the figures go (default: evaluation.json in the run folder)")
    p.set_defaults(handler=_evaluate)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="write every image's embedding to a Parquet or .npz file",
        description="One row per image of DATA: its path, its label and class when DATA has class subfolders, and its "
        "backbone embedding (the features kNN and the linear probe use; not l2-normalised).",
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--out", metavar="FILE", help=".parquet or .npz (default: embeddings.parquet in the run folder)")
    p.set_defaults(handler=_embed)


def _add_neighbors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "neighbors",
        help="a grid of query images and their nearest neighbours in DATA",
        description="For each query, the image and its nearest neighbours in DATA by cosine similarity of l2-normalised "
        "backbone features. Queries are --query files, or random images of DATA.",
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--query", nargs="+", metavar="IMAGE", help="query image files (default: --num-queries random images of DATA)")
    p.add_argument("--num-queries", type=int, default=6, help="random queries drawn from DATA when no --query is given (default: 6)")
    p.add_argument("--k", type=int, default=8, help="neighbours shown per query (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random queries")
    p.add_argument("--out", metavar="FILE.png", help="the figure (default: neighbors.png in the run folder)")
    p.set_defaults(handler=_neighbors)


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "map",
        help="a 2-D map of the embeddings with image thumbnails",
        description="Projects the l2-normalised embeddings of DATA to 2-D (UMAP when umap-learn is installed, else PCA) "
        "and draws every image as a point coloured by class, beside a lattice of non-overlapping thumbnails.",
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--method", choices=["auto", "umap", "pca"], default="auto", help="projection (default: umap if installed, else pca)")
    p.add_argument("--grid", type=int, default=22, help="thumbnail lattice is GRID x GRID cells, one thumbnail per cell at most (default: 22)")
    p.add_argument("--max-images", type=int, default=5000, help="a random subset of this many images is mapped (default: 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of UMAP")
    p.add_argument("--out", metavar="FILE.png", help="the figure (default: map.png in the run folder)")
    p.set_defaults(handler=_map)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="the backbone as torchvision weights or ONNX",
        description="torchvision: a state_dict for torchvision's ResNet with fc = Identity (a JSON description goes beside "
        "it). onnx: the feature graph, input 'images' (batch, 3, S, S) normalised, output 'features' (batch, D), dynamic batch.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run folder of `simsiam train` (its checkpoints/last.ckpt) or a .ckpt file")
    p.add_argument("--format", required=True, choices=["torchvision", "onnx"], help="torchvision state_dict or ONNX graph")
    p.add_argument("--out", metavar="FILE", help="default: <backbone>.pt or <backbone>.onnx in the run folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.set_defaults(handler=_export)


def _at_least(value: float, minimum: float, option: str) -> None:
    from .config import ConfigError

    if value < minimum:
        raise ConfigError(f"{option}: must be at least {minimum:g}, got {value:g}")


def _output(args: argparse.Namespace, file: Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """--out, or ``default_name`` in the run folder; the suffix checked before any work is done."""
    from .checkpoint import run_folder_of
    from .config import ConfigError

    out = Path(args.out) if args.out else run_folder_of(file) / default_name
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out: {out} must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a folder; give a file name")
    return out


def _device(accelerator: str) -> Any:
    import torch

    from .config import ConfigError

    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("--accelerator: gpu asked for, but no CUDA GPU is available")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def _load_trained(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    from .checkpoint import load_checkpoint, resolve_checkpoint

    _device(getattr(args, "accelerator", "cpu"))  # --accelerator gpu without a GPU fails before any work
    file = resolve_checkpoint(args.checkpoint)
    model, cfg = load_checkpoint(file)
    return model, cfg, file


def _features(args: argparse.Namespace, model: Any, file: Path, images: Any) -> Any:
    from .evaluate import feature_cache_key, features_of

    key = feature_cache_key(file, images.images) if args.cache_features else None
    feats, cache = features_of(model, images.images, _device(args.accelerator), args.batch_size, key, progress=not args.quiet)
    if cache is not None and not args.quiet:
        print(f"features of {images.source}: {cache}")
    return feats


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from . import data
    from .evaluate import evaluate_encoder

    _at_least(args.knn_k, 1, "--knn-k")
    _at_least(args.linear_epochs, 1, "--linear-epochs")
    _at_least(args.batch_size, 1, "--batch-size")
    if not args.knn_temperature > 0 or not args.linear_lr > 0:
        from .config import ConfigError

        raise ConfigError("--knn-temperature and --linear-lr: must be positive")
    model, cfg, file = _load_trained(args)
    out = _output(args, file, "evaluation.json", EVAL_EXTENSIONS)
    train = data.load(args.train, cfg.image_size, progress=not args.quiet)
    test = data.load(args.test, cfg.image_size, progress=not args.quiet)
    result = evaluate_encoder(
        model, train, test, knn_k=args.knn_k, knn_temperature=args.knn_temperature, linear=args.linear,
        linear_epochs=args.linear_epochs, linear_lr=args.linear_lr, device=_device(args.accelerator),
        batch_size=args.batch_size, checkpoint=file, cache=args.cache_features, progress=not args.quiet,
    )  # fmt: skip
    result = {"checkpoint": str(file), "backbone": cfg.model.backbone, "image_size": cfg.image_size, **result}
    print(f"{file}: {cfg.model.backbone}, {result['feature_dim']}-d features at {cfg.image_size}x{cfg.image_size}")
    print(f"  train  {len(train):>7} images, {len(train.classes)} classes   {train.source}")
    print(f"  test   {len(test):>7} images, {len(test.classes)} classes   {test.source}")
    print("  ---------------------------------")
    print(f"  kNN top-1      {result['knn']['top1']:.4f}   k={args.knn_k}, T={args.knn_temperature:g}")
    if args.linear:
        lin = result["linear"]
        print(f"  linear top-1   {lin['top1']:.4f}   {args.linear_epochs} epochs, lr {args.linear_lr:g}, train top-1 {lin['train_top1']:.4f}")
        print("  backbone weights and BN statistics unchanged: checked")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from . import data
    from .explore import write_embeddings

    _at_least(args.batch_size, 1, "--batch-size")
    model, cfg, file = _load_trained(args)
    out = _output(args, file, "embeddings.parquet", EMBED_EXTENSIONS)
    images = data.load(args.data, cfg.image_size, progress=not args.quiet)
    feats = _features(args, model, file, images)  # (N, D)
    meta = {"checkpoint": str(file), "backbone": cfg.model.backbone, "image_size": cfg.image_size, "data": images.source}
    write_embeddings(out, feats, images, meta)
    print(f"wrote {out}: {len(images)} embeddings of {feats.shape[1]} dimensions" + (", with labels" if images.labels is not None else ""))
    return 0


def _neighbors(args: argparse.Namespace) -> int:
    import torch

    from . import data
    from .explore import nearest_neighbors, plot_neighbors

    _at_least(args.k, 1, "--k")
    _at_least(args.num_queries, 1, "--num-queries")
    _at_least(args.batch_size, 1, "--batch-size")
    model, cfg, file = _load_trained(args)
    out = _output(args, file, "neighbors.png", FIGURE_EXTENSIONS)
    bank = data.load(args.data, cfg.image_size, progress=not args.quiet)
    if len(bank) < 2:
        raise data.DataError(f"{bank.source}: one image only; neighbours need at least two")
    feats = _features(args, model, file, bank)  # (N, D)
    if args.query:
        decoded = []
        for q in args.query:
            try:
                decoded.append(data.decode_image(q, cfg.image_size))
            except FileNotFoundError:
                raise data.DataError(f"--query: {q}: no such file") from None
            except Exception as e:  # Pillow raises many types for files that are not images
                raise data.DataError(f"--query: {q}: cannot decode image ({type(e).__name__}: {e})") from None
        query_images = torch.stack(decoded)  # (Q, 3, S, S) uint8
        from .evaluate import features_of

        query_feats, _ = features_of(model, query_images, feats.device)  # (Q, D)
        # A query that is itself one of DATA's files is not its own neighbour.
        where = {str(Path(p).resolve()): i for i, p in enumerate(bank.paths)}
        exclude = torch.tensor([where.get(str(Path(q).resolve()), -1) for q in args.query])
        names, labels = ["/".join(Path(q).parts[-2:]) for q in args.query], [None] * len(args.query)
    else:
        g = torch.Generator().manual_seed(args.seed)
        picks = torch.randperm(len(bank), generator=g)[: args.num_queries]
        query_images, query_feats, exclude = bank.images[picks], feats[picks.to(feats.device)], picks
        labels = [None if bank.labels is None else int(bank.labels[i]) for i in picks]
        names = [bank.classes[lab] if lab is not None else bank.paths[i].rsplit("/", 1)[-1] for lab, i in zip(labels, picks.tolist())]
    sims, idx = nearest_neighbors(query_feats, feats, k=args.k, exclude=exclude)  # (Q, k) each
    title = f"Nearest neighbours in {_name(bank.source)} by cosine similarity of backbone features ({cfg.model.backbone}, {file.name})"
    if bank.labels is not None and any(lab is not None for lab in labels):
        title += "\ngreen: same class as the query, red: another class"
    plot_neighbors(query_images, names, labels, bank, sims.cpu(), idx.cpu(), out, title)
    agree = ""
    if bank.labels is not None and all(lab is not None for lab in labels):
        same = (bank.labels[idx.cpu()] == torch.tensor(labels)[:, None]).float().mean().item()
        agree = f"; {same:.0%} of the neighbours share their query's class"
    print(f"wrote {out}: {len(names)} queries x {idx.shape[1]} neighbours{agree}")
    return 0


def _map(args: argparse.Namespace) -> int:
    import torch

    from . import data
    from .explore import map_method, plot_map, project_2d

    _at_least(args.grid, 2, "--grid")
    _at_least(args.max_images, 2, "--max-images")
    _at_least(args.batch_size, 1, "--batch-size")
    method = map_method(args.method)
    model, cfg, file = _load_trained(args)  # a bad checkpoint is the one line printed, before any note
    if method == "PCA" and args.method == "auto":
        print("umap-learn is not installed: the map uses PCA (pip install 'simsiam[umap]' for UMAP)")
    out = _output(args, file, "map.png", FIGURE_EXTENSIONS)
    images = data.load(args.data, cfg.image_size, progress=not args.quiet)
    if len(images) > args.max_images:
        total, g = len(images), torch.Generator().manual_seed(args.seed)
        images = images.subset(torch.randperm(total, generator=g)[: args.max_images].sort().values)
        print(f"mapping a random {args.max_images} of the {total} images (--max-images)")
    feats = _features(args, model, file, images)  # (N, D)
    if not args.quiet:
        print(f"projecting {len(images)} embeddings to 2-D with {method}" + (" (a minute or more on a CPU)" if method == "UMAP" and len(images) > 2000 else ""))
    coords, method = project_2d(feats, method.lower(), seed=args.seed)  # (N, 2)
    title = f"{method} map of the backbone embeddings of {_name(images.source)} ({cfg.model.backbone}, {file.name})"
    shown = plot_map(coords, images, method, out, grid=args.grid, title=title)
    print(f"wrote {out}: {method} projection of {len(images)} embeddings, {shown} thumbnails")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import check_onnx, export_onnx, export_torchvision, loading_code

    model, cfg, file = _load_trained(args)
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    out = _output(args, file, f"{cfg.model.backbone}{suffix}", (".onnx",) if args.format == "onnx" else (".pt", ".pth"))
    size, dim = cfg.image_size, model.feature_dim
    if args.format == "torchvision":
        meta = export_torchvision(model, cfg, out, source=str(file))
        print(f"wrote {out}: {cfg.model.backbone} backbone weights, {dim}-d features, trained at {size}x{size} (description: {meta})")
        print("load them with:\n    " + "\n    ".join(loading_code(cfg, out, model.backbone.conv1.out_channels)))
    else:
        import torch

        export_onnx(model, cfg, out, opset=args.opset, source=str(file))
        print(f"wrote {out}: input 'images' (batch, 3, {size}, {size}) float32, output 'features' (batch, {dim}); batch size is dynamic")
        try:
            diff = check_onnx(model, out, torch.randn(3, 3, size, size))
            print(f"checked with onnxruntime: largest difference from PyTorch {diff:.2e}")
        except ImportError:
            pass
    print("inputs: RGB scaled to [0, 1], then normalised with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)")
    return 0


def _name(source: str) -> str:
    return "the demo set" if source == "demo" else (Path(source).name or source)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsiam", description="SimSiam self-supervised pretraining, evaluation and export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    for add in (_add_evaluate, _add_embed, _add_neighbors, _add_map, _add_export):
        add(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .engine import NonFiniteLossError
    from .train import RunError
    from .evaluate import BackboneChangedError

    return (ConfigError, DataError, RunError, NonFiniteLossError, CheckpointError, BackboneChangedError)


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
