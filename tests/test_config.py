"""Recipes carry the paper's settings; config files and flags layer over them."""

import pytest

from simsiam.cli import main
from simsiam.config import (
    ConfigError,
    TrainConfig,
    check,
    default_recipe,
    layered,
    load_yaml,
    recipe,
    resolve,
    resume_config,
)
from simsiam.errors import RunError
from simsiam.options import resumable_keys, walk


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
    assert small.precision == "32-true"  # on every CPU, AMX or not (config.layers.default_precision)


def test_unknown_keys_and_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match="optim: unknown key .lr_base"):
        TrainConfig.from_dict({"optim": {"lr_base": 0.1}})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": "many"})
    with pytest.raises(ConfigError, match="recipe"):
        recipe("mnist")


def test_flags_override_the_config_file_which_overrides_the_recipe():
    file = {"recipe": "demo", "epochs": 3, "optim": {"base_lr": 0.5}, "knn_every": 0}
    cfg, names = layered({"epochs": 1, "model.proj_dim": 32}, file, "c.yaml")
    assert cfg.epochs == 1 and names["epochs"] == "--epochs"  # flag over file
    assert cfg.optim.base_lr == 0.5 and names["optim.base_lr"] == "c.yaml: optim.base_lr"  # file over recipe (demo has 0.3)
    assert cfg.model.backbone == "resnet10-tiny" and cfg.recipe == "demo"  # from the recipe
    assert cfg.model.proj_dim == 32 and cfg.knn_every == 0


def test_a_bad_value_is_named_as_the_user_gave_it():
    with pytest.raises(ConfigError, match=r"^--lr: must be positive, got -1.0$"):
        check(*layered({"optim.base_lr": -1.0}))
    with pytest.raises(ConfigError, match=r"^c.yaml: augment.hue: must be in \[0, 0.5\], got 0.9$"):
        check(*layered({}, {"augment": {"hue": 0.9}}, "c.yaml"))
    with pytest.raises(ConfigError, match=r"^--warmup-epochs: must be a finite number, got inf$"):
        check(*layered({"optim.warmup_epochs": float("inf")}))
    with pytest.raises(ConfigError, match=r"^--image-size: must be in \[8, 1024\], got 100000$"):
        check(*layered({"image_size": 100000}))
    with pytest.raises(ConfigError, match="--compile-mode: applies to the compiled step"):
        check(*layered({"compile_mode": "reduce-overhead", "compile": False}))


def test_an_image_size_found_in_the_data_is_named_as_such():
    with pytest.raises(ConfigError, match="DATA: its images are 1 px on the shorter side"):
        resolve(TrainConfig(), image_size=1, on_gpu=False)


def test_every_flag_has_help_and_a_readable_metavar(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "MODEL." not in text and "OPTIM." not in text and "AUGMENT." not in text
    for key, f, _ in walk(TrainConfig):
        if f.metadata.get("flag"):
            assert f.metadata["help"].strip() and f.metadata["flag"] in text, key


def test_only_some_options_may_change_on_resume(tmp_path):
    saved = resolve(TrainConfig(), image_size=32, on_gpu=False)
    cfg = resume_config(saved, {"epochs": 7, "out": "x"}, tmp_path)
    assert cfg.epochs == 7 and cfg.model == saved.model
    with pytest.raises(RunError, match=r"^--proj-dim: the checkpoint is of another model"):
        resume_config(saved, {"model.proj_dim": 64}, tmp_path)
    assert {"epochs", "precision", "devices"} <= set(resumable_keys(TrainConfig)) and "batch_size" not in resumable_keys(TrainConfig)


def test_the_default_recipe_on_a_cpu_is_cpu_sized_unless_a_backbone_or_recipe_was_named():
    assert default_recipe({}, on_gpu=False)[0] == "demo"
    name, note = default_recipe({"data": "photos"}, on_gpu=False)
    assert name == "cpu" and "--recipe cifar10" in note and "resnet10-tiny" in note
    assert default_recipe({"data": "photos", "model.backbone": "resnet50"}, on_gpu=False) == (None, None)
    assert default_recipe({"data": "photos", "batch_size": 64}, on_gpu=False)[0] == "cpu"  # one number never swaps the network
    assert default_recipe({"data": "photos"}, on_gpu=True) == (None, None)


@pytest.mark.parametrize(
    "text, why",
    [
        ("a: &a [1, 1]\nb: &b [*a, *a]\nepochs: [*b, *b]\n", "aliases"),
        ("epochs: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply|not valid YAML"),
        ("epochs: 1\n" + "#" * (2 << 20) + "\n", "too large for a config file"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_a_hostile_config_file_is_one_short_line(tmp_path, text, why):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why) as caught:
        load_yaml(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
