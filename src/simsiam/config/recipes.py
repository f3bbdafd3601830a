"""Recipes: named settings that sit between the field defaults and a config file.

``cifar10`` and ``imagenet`` are the paper's settings (appendix D and section 4),
``demo`` is the CPU demo's and ``cpu`` its network for own data on a machine
without a GPU. :func:`default_recipe` picks one when none was named;
:func:`simsiam.config.layered` applies it under the config file and the flags.
"""

from __future__ import annotations

from typing import Any

from simsiam.errors import ConfigError

RECIPES: dict[str, dict[str, Any]] = {
    # Paper, appendix D: ResNet-18 variant (3x3 stem, no max-pool), 2-layer 2048-d
    # projector, 512-d predictor hidden layer, SGD lr 0.03 x batch/256, wd 5e-4,
    # momentum 0.9, cosine decay, batch 512, 800 epochs; no blur on 32x32 images.
    "cifar10": dict(
        epochs=800,
        batch_size=512,
        model=dict(backbone="resnet18", small_images=True, proj_dim=2048, proj_layers=2, pred_hidden_dim=512),
        optim=dict(base_lr=0.03, weight_decay=5e-4, momentum=0.9),
        augment=dict(blur_p=0.0),
    ),
    # Paper, section 4 "Baseline settings": ResNet-50, 3-layer 2048-d projector,
    # 512-d predictor hidden layer, SGD lr 0.05 x batch/256, wd 1e-4, momentum 0.9,
    # cosine decay with the predictor's lr fixed (Table 1), batch 512, 100 epochs,
    # SimCLR/MoCo v2 augmentations with blur p=0.5, 224 px.
    "imagenet": dict(
        epochs=100,
        batch_size=512,
        image_size=224,
        cache_size=256,  # resized once to 256 px (shorter side, centre crop), random crops of it at 224, as the paper's pipeline
        model=dict(backbone="resnet50", small_images=False, proj_dim=2048, proj_layers=3, pred_hidden_dim=512),
        optim=dict(base_lr=0.05, weight_decay=1e-4, momentum=0.9, fixed_predictor_lr=True),
        augment=dict(blur_p=0.5),
    ),
    # The CPU demo (README, "Why the demo looks the way it does"): a quarter-width
    # ResNet-10 with the ImageNet stem trains ~100x faster than ResNet-18 with the
    # CIFAR stem on two cores, and a small batch with a high lr (base 0.3; 0.06
    # gained 5 points in 40 epochs, 0.3 gained 8 in 30) gets SimSiam past its
    # colour-unlearning phase within minutes. In float32 on a 2-core Xeon without
    # AMX, 25 epochs of resnet10-tiny gained 11.0 points (0.272 -> 0.382); the
    # half-width resnet10-slim gained 8.8 in 30 epochs at half the speed.
    "demo": dict(
        epochs=25,
        batch_size=128,
        model=dict(backbone="resnet10-tiny", small_images=False, proj_dim=512, proj_layers=2, pred_hidden_dim=128),
        optim=dict(base_lr=0.3, weight_decay=5e-4),
        knn_k=20,
    ),
}
# Own data on a machine without a GPU: the demo's network, batch and lr, the
# user's epochs. The paper's networks run at single-digit images/s on two cores.
RECIPES["cpu"] = {k: v for k, v in RECIPES["demo"].items() if k not in ("epochs", "knn_k")}


def recipe(name: str) -> dict[str, Any]:
    if not isinstance(name, str) or name not in RECIPES:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise ConfigError(f"unknown recipe {shown}; choose one of {', '.join(RECIPES)}", key="recipe")
    return RECIPES[name]


def default_recipe(given: dict[str, Any], on_gpu: bool) -> tuple[str | None, str | None]:
    """The recipe to use when none was named, and the line that says so.

    ``given`` holds the options the user set (flags and config file, flat). No
    DATA on a machine without a GPU is the demo; own data there gets the CPU-sized
    network unless a recipe or a backbone was named. Other options (a batch size,
    an lr, epochs) change that number only, never the network.
    """
    if on_gpu or given.get("recipe") is not None:
        return None, None
    if given.get("data") is None:
        return "demo", "no DATA given: training on the bundled demo set with the CPU demo recipe (see README, 'The demo')"
    if "model.backbone" not in given:
        return "cpu", (
            f"no GPU found: training the CPU-sized network {RECIPES['cpu']['model']['backbone']} (--recipe cpu); "
            "--backbone NAME, or --recipe cifar10 or imagenet for the paper's setting, train another"
        )
    return None, None
