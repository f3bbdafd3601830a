"""The ``simsiam`` commands that read a checkpoint: evaluate, embed, neighbors, map, export.

Each loads the trained SimSiam through checkpoint.load_checkpoint, decodes DATA
at the training resolution, and takes features from SimSiam.features (through
evaluate.features_of, which extracts them once and can cache them). Like the rest
of the command line, they parse, call the library and print; the library is
imported when a command runs, so that ``simsiam --help`` stays quick.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simsiam.errors import ConfigError
from simsiam.files import error_text, show_path
from simsiam.options import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_KNN_K,
    MAX_LR,
    add_output_flags,
    at_least,
    existing_path,
    output_problem,
    path_problem,
    positive_up_to,
)

EVAL_EXTENSIONS = (".json",)
EMBED_EXTENSIONS = (".parquet", ".npz")
FIGURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _add_checkpoint_arguments(p: argparse.ArgumentParser, data: bool = True, features: bool = True) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run folder of `simsiam train` (its checkpoints/last.ckpt) or a .ckpt file")
    if data:
        p.add_argument("data", nargs="?", metavar="DATA", help="image folder, or CIFAR-10 python batches (default: the bundled demo set)")
    if features:
        p.add_argument(
            "--batch-size", type=int, default=512, metavar="N", help="images per forward pass when extracting features (default: 512)"
        )
        p.add_argument(
            "--accelerator",
            choices=["auto", "cpu", "gpu"],
            default="auto",
            help="where features are extracted (default: the GPU when there is one)",
        )
        p.add_argument(
            "--cache-features",
            action="store_true",
            help="keep the extracted features under $SIMSIAM_CACHE/features (default ~/.cache/simsiam) and reuse them",
        )
    add_output_flags(p)


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "kNN top-1 (l2-normalised features, cosine, similarity-weighted votes) and, with --linear, the top-1 "
        "of a linear probe on the frozen backbone. Both DATA sets need one subfolder per class."
    )
    _add_checkpoint_arguments(p, data=False)
    p.add_argument("--train", required=True, metavar="DATA", help="labeled images the classifiers learn from")
    p.add_argument("--test", required=True, metavar="DATA", help="labeled images they are scored on")
    p.add_argument("--knn-k", type=int, default=200, metavar="K", help="neighbours that vote (default: 200)")
    p.add_argument("--knn-temperature", type=float, default=0.1, metavar="T", help="vote weight exp(similarity / T) (default: 0.1)")
    p.add_argument("--linear", action="store_true", help="also train and score a linear probe on the frozen features")
    p.add_argument("--linear-epochs", type=int, default=100, metavar="N", help="epochs of the linear probe (default: 100)")
    p.add_argument(
        "--linear-lr", type=float, default=0.1, metavar="LR", help="initial lr of the probe's SGD, decayed by a cosine (default: 0.1)"
    )
    p.add_argument("--out", metavar="FILE.json", help="where the figures go (default: evaluation.json in the run folder)")
    p.set_defaults(handler=_evaluate)


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One row per image of DATA: its path, its label and class when DATA has class subfolders, and its "
        "embedding: the backbone's features (those kNN and the linear probe use), or the projector's z; "
        "l2-normalised with --normalize. The file records which."
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--out", metavar="FILE", help=".parquet or .npz (default: embeddings.parquet in the run folder)")
    p.add_argument(
        "--features",
        choices=["backbone", "projector"],
        default="backbone",
        help="backbone: the features kNN and the probe use (default); projector: z, the projection MLP's output",
    )
    p.add_argument(
        "--normalize", action="store_true", help="l2-normalise every row (unit length), as cosine search and vector indexes want"
    )
    p.set_defaults(handler=_embed)


def _neighbors_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "For each query, the image and its nearest neighbours in DATA by cosine similarity of l2-normalised "
        "backbone features. Queries are --query files, or random images of DATA."
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--query", nargs="+", metavar="IMAGE", help="query image files (default: --num-queries random images of DATA)")
    p.add_argument(
        "--num-queries", type=int, default=6, metavar="N", help="random queries drawn from DATA when no --query is given (default: 6)"
    )
    p.add_argument("--k", type=int, default=8, metavar="K", help="neighbours shown per query (default: 8)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random queries (default: 0)")
    p.add_argument("--out", metavar="FILE.png", help="the figure (default: neighbors.png in the run folder)")
    p.set_defaults(handler=_neighbors)


def _map_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Projects the l2-normalised embeddings of DATA to 2-D (UMAP when umap-learn is installed, else PCA) "
        "and draws every image as a point coloured by class, beside a lattice of non-overlapping thumbnails."
    )
    _add_checkpoint_arguments(p)
    p.add_argument("--method", choices=["auto", "umap", "pca"], default="auto", help="projection (default: umap if installed, else pca)")
    p.add_argument(
        "--grid", type=int, default=22, metavar="N", help="thumbnail lattice is N x N cells, one thumbnail per cell at most (default: 22)"
    )
    p.add_argument(
        "--max-images", type=int, default=5000, metavar="N", help="a random subset of this many images is mapped (default: 5000)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the subset and of UMAP (default: 0)")
    p.add_argument("--out", metavar="FILE.png", help="the figure (default: map.png in the run folder)")
    p.set_defaults(handler=_map)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "torchvision: a state_dict that loads strictly into the backbone's own constructor (torchvision's with its "
        "classifier replaced by Identity, or timm.create_model for timm: backbones); the loading lines are printed and go into a JSON "
        "description beside it; safetensors: the same state_dict as a safetensors file, read without unpickling. onnx: the feature graph, input 'images' (batch, C, S, S) normalised, output 'features' (batch, D), "
        "dynamic batch."
    )
    _add_checkpoint_arguments(p, data=False, features=False)
    p.add_argument(
        "--format",
        required=True,
        choices=["torchvision", "safetensors", "onnx"],
        help="the backbone's state_dict as a torch file, or as safetensors (no pickle), or the ONNX feature graph",
    )
    p.add_argument("--out", metavar="FILE", help="default: <backbone>.pt or <backbone>.onnx in the run folder")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default: 17)")
    p.add_argument(
        "--dynamic", action="store_true", help="onnx: any image height and width, not only the training size (checked at two sizes)"
    )
    p.set_defaults(handler=_export)


# The range of each numeric option of these commands, {dest: (flag, lowest, highest)}: values past
# these make a figure of thousands of panels, a buffer of a billion images or a loop without end.
RANGES = {
    "batch_size": ("--batch-size", 1, MAX_BATCH), "knn_k": ("--knn-k", 1, MAX_KNN_K), "linear_epochs": ("--linear-epochs", 1, MAX_EPOCHS),
    "k": ("--k", 1, 64), "num_queries": ("--num-queries", 1, 64), "grid": ("--grid", 2, 100), "max_images": ("--max-images", 2, math.inf),
    "seed": ("--seed", 0, 2**32 - 1), "opset": ("--opset", 7, None), "knn_temperature": ("--knn-temperature", 0, math.inf),
    "linear_lr": ("--linear-lr", 0, MAX_LR),
}  # fmt: skip
POSITIVE = ("knn_temperature", "linear_lr")  # above 0, not at it
PATHS = {"checkpoint": "CHECKPOINT", "data": "DATA", "train": "--train", "test": "--test"}


def _check_options(args: argparse.Namespace, suffixes: tuple[str, ...]) -> None:
    """Every number, path and --out of a command, before a checkpoint or an image is read; ConfigError names the option."""
    for dest, (flag, low, high) in RANGES.items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag}: must be a finite number, got {value}")
        high = _highest_opset() if high is None else high
        if problem := (positive_up_to(high) if dest in POSITIVE else at_least(low, high))(value):
            raise ConfigError(f"{flag}: {problem}")
    for dest, name in PATHS.items():
        value = getattr(args, dest, None)
        # A missing checkpoint is resolve_checkpoint's to say (it names what it looked for).
        if value is not None and (problem := path_problem(value) if dest == "checkpoint" else existing_path(value)):
            raise ConfigError(f"{name}: {problem}")
    for query in getattr(args, "query", None) or ():
        if problem := existing_path(query) or (None if Path(query).is_file() else f"{show_path(query)} is a folder, not an image file"):
            raise ConfigError(f"--query: {problem}")
    if args.out is not None:
        _check_out(Path(args.out), suffixes, output_problem(args.out, folder=False))


def _highest_opset() -> int:
    try:
        from torch.onnx import _constants  # private: what this torch can export

        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError, ValueError):
        return 17


def _check_out(out: Path, suffixes: tuple[str, ...], problem: str | None = None) -> Path:
    if problem:
        raise ConfigError(f"--out: {problem}")
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out: {show_path(out)} must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"--out: {show_path(out)} is a folder; give a file name")
    return out


def _output(args: argparse.Namespace, file: Path, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """--out (checked already), or ``default_name`` in the run folder."""
    from simsiam.run_folder import RunFolder

    return Path(args.out) if args.out is not None else _check_out(RunFolder.of_checkpoint(file).path / default_name, suffixes)


def _device(accelerator: str) -> Any:
    import torch

    from simsiam.system import uses_gpu

    return torch.device("cuda" if uses_gpu(accelerator) else "cpu")


def _open(args: argparse.Namespace, default_name: str | Callable[[Any], str], suffixes: tuple[str, ...]) -> tuple[Any, Any, Path, Path]:
    """What every command that reads a checkpoint starts with: checked options, the model, its config, its file, the output path."""
    from simsiam.checkpoint import load_checkpoint, resolve_checkpoint

    _check_options(args, suffixes)
    _device(getattr(args, "accelerator", "cpu"))  # --accelerator gpu without a GPU fails before any work
    file = resolve_checkpoint(args.checkpoint)
    model, cfg = load_checkpoint(file)
    name = default_name(cfg) if callable(default_name) else default_name
    return model, cfg, file, _output(args, file, name, suffixes)


def _images(args: argparse.Namespace, cfg: Any, data: str | None) -> Any:
    """DATA decoded at the training resolution; the demo set, said out loud, when DATA was left out."""
    from simsiam.data.sources import load

    if data is None:
        print("no DATA given: using the bundled demo set (5,000 CIFAR-10 images); pass DATA for your own images")
    # At the size training cached them (256 px for 224 px training, say; centre-cropped to the training size for features).
    size = getattr(cfg, "cache_size", None) or cfg.image_size
    return load(data, size, progress=args.progress, channels=cfg.model.channels or 3, cache_format=cfg.cache_format)


def _features(args: argparse.Namespace, model: Any, cfg: Any, file: Path, images: Any, kind: str = "backbone") -> Any:
    from simsiam.evaluate import feature_cache_key, features_of

    key = feature_cache_key(file, images.images) if args.cache_features else None
    if kind != "backbone":  # the projector's z: the same extraction, through backbone and projector
        from simsiam.model.siamese import Projected

        model, key = Projected(model), key and f"{key}-{kind}"
    mean, std = cfg.normalization()  # as in training
    feats, cache = features_of(
        model, images.images, _device(args.accelerator), args.batch_size, key, args.progress, mean, std, cfg.image_size, file
    )
    if cache is not None:
        print(f"features of {images.source}: {cache}")
    return feats


def _evaluate(args: argparse.Namespace) -> int:
    from simsiam.evaluate import evaluate_encoder
    from simsiam.files import write_json

    model, cfg, file, out = _open(args, "evaluation.json", EVAL_EXTENSIONS)
    train, test = _images(args, cfg, args.train), _images(args, cfg, args.test)
    result = evaluate_encoder(
        model, train, test, knn_k=args.knn_k, knn_temperature=args.knn_temperature, linear=args.linear,
        linear_epochs=args.linear_epochs, linear_lr=args.linear_lr, device=_device(args.accelerator),
        batch_size=args.batch_size, checkpoint=file, cache=args.cache_features, progress=args.progress,
        mean=cfg.normalization()[0], std=cfg.normalization()[1], crop=cfg.image_size,
    )  # fmt: skip
    result = {"checkpoint": str(file), "backbone": cfg.model.backbone, "image_size": cfg.image_size, **result}
    print(f"{file}: {cfg.model.backbone}, {result['feature_dim']}-d features at {cfg.image_size}x{cfg.image_size}")
    print(f"  train  {len(train):>7} images, {len(train.classes)} classes   {train.source}")
    print(f"  test   {len(test):>7} images, {len(test.classes)} classes   {test.source}")
    print("  ---------------------------------")
    print(f"  kNN top-1      {result['knn']['top1']:.4f}   k={args.knn_k}, T={args.knn_temperature:g}")
    if args.linear:
        lin = result["linear"]
        print(
            f"  linear top-1   {lin['top1']:.4f}   {args.linear_epochs} epochs, lr {args.linear_lr:g}, train top-1 {lin['train_top1']:.4f}"
        )
        print("  backbone weights and BN statistics unchanged: checked")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from simsiam.explore import write_embeddings

    model, cfg, file, out = _open(args, "embeddings.parquet", EMBED_EXTENSIONS)
    images = _images(args, cfg, args.data)
    feats = _features(args, model, cfg, file, images, kind=args.features)  # (N, D)
    if args.normalize:
        import torch.nn.functional as F

        feats = F.normalize(feats, dim=1)  # unit rows: a dot product is the cosine similarity
    meta = {"checkpoint": str(file), "backbone": cfg.model.backbone, "image_size": cfg.image_size, "data": images.source}
    meta.update(features=args.features, normalized=args.normalize)
    write_embeddings(out, feats, images, meta)
    kind = f"{args.features} features" + (", unit length" if args.normalize else "")
    labels = ", with labels" if images.labels is not None else ""
    print(f"wrote {out}: {len(images)} embeddings of {feats.shape[1]} dimensions ({kind}){labels}")
    return 0


def _neighbors(args: argparse.Namespace) -> int:
    from simsiam.explore import neighbor_grid, plot_neighbors

    model, cfg, file, out = _open(args, "neighbors.png", FIGURE_EXTENSIONS)
    bank = _images(args, cfg, args.data)
    feats = _features(args, model, cfg, file, bank)  # (N, D)
    mean, std = cfg.normalization()
    grid = neighbor_grid(model, bank, feats, queries=args.query, num_queries=args.num_queries, k=args.k, seed=args.seed, mean=mean, std=std,
                         crop=cfg.image_size)  # fmt: skip
    title = f"Nearest neighbours in {_name(bank.source)} by cosine similarity of backbone features ({cfg.model.backbone}, {file.name})"
    plot_neighbors(grid, bank, out, title)
    agree = "" if grid.agreement is None else f"; {grid.agreement:.0%} of the neighbours share their query's class"
    print(f"wrote {out}: {len(grid.names)} queries x {grid.idx.shape[1]} neighbours{agree}")
    return 0


def _map(args: argparse.Namespace) -> int:
    import torch

    from simsiam.explore import map_method, plot_map, project_2d

    method = map_method(args.method)
    model, cfg, file, out = _open(args, "map.png", FIGURE_EXTENSIONS)  # a bad checkpoint is the one line printed, before any note
    if method == "PCA" and args.method == "auto":
        print("umap-learn is not installed: the map uses PCA (pip install 'simsiam[umap]' for UMAP)")
    images = _images(args, cfg, args.data)
    if len(images) > args.max_images:
        total, g = len(images), torch.Generator().manual_seed(args.seed)
        images = images.subset(torch.randperm(total, generator=g)[: args.max_images].sort().values)
        print(f"mapping a random {args.max_images} of the {total} images (--max-images)")
    feats = _features(args, model, cfg, file, images)  # (N, D)
    print(
        f"projecting {len(images)} embeddings to 2-D with {method}"
        + (" (a minute or more on a CPU)" if method == "UMAP" and len(images) > 2000 else "")
    )
    coords, method = project_2d(feats, method.lower(), seed=args.seed)  # (N, 2)
    title = f"{method} map of the backbone embeddings of {_name(images.source)} ({cfg.model.backbone}, {file.name})"
    shown = plot_map(coords, images, method, out, grid=args.grid, title=title)
    print(f"wrote {out}: {method} projection of {len(images)} embeddings, {shown} thumbnails")
    return 0


def _export(args: argparse.Namespace) -> int:
    from simsiam.export import check_onnx, describe_input, export_onnx, export_torchvision, loading_code

    suffixes = {"onnx": (".onnx",), "safetensors": (".safetensors",)}.get(args.format, (".pt", ".pth"))
    if args.format == "onnx":
        from simsiam.export import require_onnx

        require_onnx()  # before any work: the extra to install is the one line printed
    # "timm:convnext_atto" -> timm_convnext_atto.pt: a colon is no file name character everywhere
    model, cfg, file, out = _open(args, lambda cfg: f"{cfg.model.backbone.replace(':', '_')}{suffixes[0]}", suffixes)
    size, dim, channels = cfg.image_size, model.feature_dim, cfg.model.channels or 3
    if args.format in ("torchvision", "safetensors"):
        meta = export_torchvision(model, cfg, out, source=str(file))
        print(f"wrote {out}: {cfg.model.backbone} backbone weights, {dim}-d features, trained at {size}x{size} (description: {meta})")
        print("load them with:\n    " + "\n    ".join(loading_code(model, out)))
    else:
        import torch

        export_onnx(model, cfg, out, opset=args.opset, source=str(file), dynamic=args.dynamic)
        shape, dynamic = ("height, width", "batch size, height and width are") if args.dynamic else (f"{size}, {size}", "batch size is")
        print(f"wrote {out}: input 'images' (batch, {channels}, {shape}) float32, output 'features' (batch, {dim}); {dynamic} dynamic")
        sizes = (size, size + 32) if args.dynamic else (size,)
        for s in sizes:
            try:
                diff = check_onnx(model, out, torch.randn(3, channels, s, s))
            except ImportError:  # onnxruntime is optional: the graph is written, unchecked
                break
            except Exception as e:  # the graph refuses that size (a ViT is built for one): take it back
                out.unlink(missing_ok=True)
                raise ConfigError(
                    f"--dynamic: the graph of {cfg.model.backbone} does not take {s}x{s} images ({error_text(e)}); "
                    "export it without --dynamic"
                ) from None
            print(f"checked with onnxruntime at {s}x{s}: largest difference from PyTorch {diff:.2e}")
    print(f"inputs: {describe_input(cfg)}")
    return 0


def _name(source: str) -> str:
    return "the demo set" if source == "demo" else (Path(source).name or source)


# The subcommands that read a checkpoint, in the order `simsiam --help` lists them (after train).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {  # name: (one-line help, its arguments)
    "evaluate": ("kNN and linear-probe accuracy of a trained encoder", _evaluate_arguments),
    "embed": ("write every image's embedding to a Parquet or .npz file", _embed_arguments),
    "neighbors": ("a grid of query images and their nearest neighbours in DATA", _neighbors_arguments),
    "map": ("a 2-D map of the embeddings with image thumbnails", _map_arguments),
    "export": ("the backbone as torchvision weights or ONNX", _export_arguments),
}
