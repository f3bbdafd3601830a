"""Recipes carry the paper's settings; config files and flags layer over them."""

import pytest
import yaml

from simsiam.cli import main
from simsiam.config import ConfigError, TrainConfig, cpu_has_bf16_units, recipe, resolve


def test_cifar10_recipe_is_the_papers_appendix_d():
    cfg = resolve(TrainConfig.from_dict(recipe("cifar10")), image_size=32, on_gpu=True)
    m, o = cfg.model, cfg.optim
    assert (m.backbone, m.small_images, m.proj_layers, m.proj_dim, m.pred_hidden_dim) == ("resnet18", True, 2, 2048, 512)
    assert (o.base_lr, o.weight_decay, o.momentum, cfg.batch_size, cfg.epochs) == (0.03, 5e-4, 0.9, 512, 800)
    assert cfg.augment.blur_p == 0 and cfg.augment.min_scale == 0.2 and cfg.precision == "bf16-mixed" and cfg.compile


def test_imagenet_recipe_is_the_papers_baseline():
    cfg = resolve(TrainConfig.from_dict(recipe("imagenet")), image_size=224, on_gpu=True)
    m, o = cfg.model, cfg.optim
    assert (m.backbone, m.small_images, m.proj_layers, m.proj_dim, m.pred_hidden_dim) == ("resnet50", False, 3, 2048, 512)
    assert (o.base_lr, o.weight_decay, o.fixed_predictor_lr, cfg.epochs, cfg.augment.blur_p) == (0.05, 1e-4, True, 100, 0.5)


def test_auto_fields_follow_image_size_and_device():
    small = resolve(TrainConfig(), image_size=32, on_gpu=False)
    large = resolve(TrainConfig(), image_size=224, on_gpu=False)
    assert small.model.small_images and small.model.proj_layers == 2 and small.optim.weight_decay == 5e-4
    assert not large.model.small_images and large.model.proj_layers == 3 and large.augment.blur_p == 0.5
    assert not small.compile
    assert small.precision == ("bf16-mixed" if cpu_has_bf16_units() else "32-true")


def test_unknown_keys_and_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match="optim: unknown key .lr_base"):
        TrainConfig.from_dict({"optim": {"lr_base": 0.1}})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": "many"})
    with pytest.raises(ConfigError, match="recipe"):
        recipe("mnist")


def test_flags_override_the_config_file_which_overrides_the_recipe(tmp_path, class_folder):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"recipe": "demo", "epochs": 3, "optim": {"base_lr": 0.5}, "knn_every": 0}))
    out = tmp_path / "run"
    args = ["train", str(class_folder), "--config", str(config), "--epochs", "1", "--out", str(out), "--batch-size", "8", "--quiet"]
    assert main(args) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1  # flag over file
    assert saved["optim"]["base_lr"] == 0.5  # file over recipe (demo has 0.3)
    assert saved["model"]["backbone"] == "resnet10-slim"  # from the recipe
