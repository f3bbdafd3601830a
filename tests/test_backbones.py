"""Backbones by name and your own module: built, trained a few steps, and reloaded from their loading lines."""

import dataclasses
import sys

import pytest
import torch
import torch.nn as nn

from simsiam import SimSiam, simsiam_loss
from simsiam.errors import ConfigError
from simsiam.model import ModelConfig


def train_a_few_steps(model: SimSiam, size: int, channels: int = 3, steps: int = 3) -> SimSiam:
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    for _ in range(steps):
        x1, x2 = torch.rand(4, channels, size, size), torch.rand(4, channels, size, size)
        loss = simsiam_loss(*model(x1, x2))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training moved no backbone weight"
    return model.eval()


def reload_as_documented(model: SimSiam, tmp_path) -> nn.Module:
    """Save the backbone's state_dict, run the loading lines, load it strictly: what an export user does."""
    file = tmp_path / "backbone.pt"
    torch.save(model.backbone.state_dict(), file)
    namespace: dict = {}
    exec("\n".join([*model.backbone_info.loading_lines, f"net.load_state_dict(torch.load({str(file)!r}), strict=True)"]), namespace)
    return namespace["net"].eval()


def assert_same_features(model: SimSiam, net: nn.Module, size: int, channels: int = 3):
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        ours, theirs = model.features(x), net(x)
    assert ours.shape == (3, model.feature_dim)
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_a_torchvision_mobilenet_trains_and_reloads_into_its_constructor(tmp_path):
    model = SimSiam("mobilenet_v3_small", image_size=32, proj_dim=32, pred_hidden_dim=8)
    assert model.feature_dim == 1024  # found by the dummy forward: the classifier's input, after its hidden layer
    info = model.backbone_info
    assert info.description == (
        "mobilenet_v3_small at 32 px: no small-image stem for this family; its 32x downsampling leaves 1x1 features, 1024-d"
    )
    assert info.loading_lines[1:] == (
        "net = torchvision.models.mobilenet_v3_small(weights=None)",
        "net.classifier[3] = torch.nn.Identity()",
    )
    assert not model.config.small_images  # recorded as built: the stem is a ResNet notion
    train_a_few_steps(model, 32)
    assert_same_features(model, reload_as_documented(model, tmp_path), 32)


def test_a_torchvision_vit_is_built_for_the_training_size():
    # ViT-B is big for a CPU test: built and reloaded, not trained (timm's test_vit trains below).
    model = SimSiam("vit_b_32", image_size=64, proj_dim=16, pred_hidden_dim=4).eval()
    assert model.feature_dim == 768
    assert model.backbone_info.loading_lines[1:] == (
        "net = torchvision.models.vit_b_32(weights=None, image_size=64)",
        "net.heads.head = torch.nn.Identity()",
    )
    assert model.backbone_info.description == "vit_b_32 at 64 px: built for 64 px images, 2x2 patches of 32 px, 768-d"
    namespace: dict = {}
    exec("\n".join(model.backbone_info.loading_lines), namespace)
    namespace["net"].load_state_dict(model.backbone.state_dict(), strict=True)
    assert_same_features(model, namespace["net"].eval(), 64)


@pytest.mark.parametrize("name", ["timm:test_vit", "timm:mobilenetv3_small_050"])
def test_a_timm_model_trains_and_reloads_into_create_model(tmp_path, name):
    timm = pytest.importorskip("timm")
    if not timm.is_model(name[5:]):
        pytest.skip(f"this timm has no {name[5:]}")
    model = SimSiam(name, image_size=32, proj_dim=32, pred_hidden_dim=8)
    assert model.backbone_info.loading_lines[0] == "import torch, timm"
    assert f"timm.create_model({name[5:]!r}, num_classes=0, in_chans=3" in model.backbone_info.loading_lines[1]
    train_a_few_steps(model, 32)
    assert_same_features(model, reload_as_documented(model, tmp_path), 32)


def test_the_reference_initialisation_is_one_switch():
    model = SimSiam("resnet18", image_size=32, zero_init_residual=True)
    assert model.config.small_images and model.config.channels == 3
    assert all((block.bn2.weight == 0).all() for layer in (model.backbone.layer1, model.backbone.layer4) for block in layer)
    assert all((block.bn3.weight == 0).all() for block in SimSiam("resnet50", zero_init_residual=True).backbone.layer2)
    assert all((block.bn2.weight == 1).all() for block in SimSiam("resnet18", image_size=32).backbone.layer1)
    assert model.backbone_info.description.startswith("resnet18 at 32 px: small-image stem (3x3 stride-1 conv1, no max-pool); 4x4 features")


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_vit_refuses_an_image_size_that_is_not_a_multiple_of_its_patch():
    with pytest.raises(ConfigError) as error:
        SimSiam("vit_b_16", image_size=40)
    assert one_line(error) == "image_size: vit_b_16 cuts images into 16x16 patches: the image size must be a multiple of 16, got 40"


def test_a_network_that_cannot_take_the_image_size_says_so_in_one_line():
    with pytest.raises(ConfigError) as error:
        SimSiam("squeezenet1_1", image_size=16)
    assert one_line(error).startswith("image_size: squeezenet1_1 cannot take 16 px images with 3 channels:")


def test_an_unknown_name_gets_close_matches():
    with pytest.raises(ConfigError) as error:
        SimSiam("resnet181")
    assert one_line(error) == (
        "model.backbone: unknown backbone 'resnet181'; did you mean resnet18, resnet101, resnet152? "
        "(any torchvision classification model, resnet10-slim, resnet10-tiny, or timm:NAME)"
    )


def test_timm_names_without_timm_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError) as error:
        SimSiam("timm:resnet10t")
    assert one_line(error) == "model.backbone: timm:resnet10t needs timm: pip install 'simsiam[timm]'"


class TinyNet(nn.Module):
    """A user's backbone that returns a feature map, not a vector."""

    def __init__(self, channels=3, width=24):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def test_your_own_module_gets_its_width_found_and_its_map_pooled():
    net = TinyNet()
    model = SimSiam(net, image_size=16, proj_dim=16, pred_hidden_dim=4)
    assert model.backbone is net and model.feature_dim == 24
    assert model.config.backbone == "module:TinyNet"
    assert (
        model.backbone_info.description == "module:TinyNet at 16 px, 3 channels: your module, (B, 24, 8, 8) averaged over positions, 24-d"
    )
    assert (net.bn.running_mean == 0).all() and net.training  # the dummy forward changed nothing
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model.features(x), net(x).mean(dim=(2, 3)))
    train_a_few_steps(model, 16)


def test_your_own_module_with_its_width_given_is_not_run():
    class Flat(nn.Module):
        def forward(self, x):
            raise AssertionError("not to be called at construction")

    assert SimSiam(Flat(), feature_dim=7, proj_dim=8).feature_dim == 7


def test_a_given_feature_width_must_match_a_named_backbone():
    with pytest.raises(ConfigError, match=r"^feature_dim: resnet10-slim gives 256-d features, not 512$"):
        SimSiam("resnet10-slim", feature_dim=512, image_size=16)


def test_your_own_module_with_a_wrong_output_is_refused_in_one_line():
    class Tokens(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2)  # (B, N, C): tokens, not features

    with pytest.raises(ConfigError) as error:
        SimSiam(Tokens(), image_size=8)
    assert "(2, 64, 3)" in one_line(error) and "(B, D)" in one_line(error)


def test_a_config_rebuilds_a_named_backbone_and_refuses_a_module():
    model = SimSiam("resnet10-slim", image_size=16, proj_dim=16)
    again = SimSiam(**dataclasses.asdict(model.config))
    assert again.feature_dim == model.feature_dim and again.config == model.config
    yours = SimSiam(TinyNet(), image_size=16, proj_dim=16)
    with pytest.raises(ConfigError, match="module:TinyNet.*SimSiam\\(backbone=your_module\\)"):
        SimSiam(**dataclasses.asdict(yours.config))


def test_the_config_checks_names_and_records_what_was_built():
    assert ModelConfig(backbone="convnext_tiny", small_images=True).resolved(32).small_images is False
    small = ModelConfig(backbone="convnext_tiny").resolved(32)
    assert small.proj_layers == 2 and small.channels == 3  # the CIFAR recipe's 2-layer projector all the same
    assert ModelConfig(channels=4).resolved(32, channels=1).channels == 4  # the config's word beats the data's
    assert ModelConfig().resolved(32, channels=13).channels == 13
