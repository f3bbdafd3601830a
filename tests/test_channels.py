"""C-channel images: the first convolution takes C channels, and the views keep them."""

import pytest
import torch

from simsiam import Augment, SimSiam, simsiam_loss
from simsiam.errors import ConfigError


def reload_as_documented(model: SimSiam, tmp_path) -> torch.nn.Module:
    file = tmp_path / "backbone.pt"
    torch.save(model.backbone.state_dict(), file)
    namespace: dict = {}
    exec("\n".join([*model.backbone_info.loading_lines, f"net.load_state_dict(torch.load({str(file)!r}), strict=True)"]), namespace)
    return namespace["net"].eval()


@pytest.mark.parametrize("channels", [4, 13])
def test_c_channel_views_train_the_demo_network(channels):
    torch.manual_seed(0)
    aug = Augment(size=16, mean=(0.5,) * channels, std=(0.25,) * channels, blur_p=0.5, seed=0)
    model = SimSiam("resnet10-slim", channels=channels, image_size=16, proj_dim=32, pred_hidden_dim=8)
    assert model.backbone.conv1.in_channels == channels and model.config.channels == channels
    images = torch.randint(0, 256, (8, channels, 20, 20), dtype=torch.uint8)
    x1, x2 = aug(images), aug(images)
    assert x1.shape == (8, channels, 16, 16) and torch.isfinite(x1).all() and not torch.equal(x1, x2)
    p1, p2, z1, z2 = model(x1, x2)
    simsiam_loss(p1, p2, z1, z2).backward()
    assert model.backbone.conv1.weight.grad.shape[1] == channels
    assert model.features(x1).shape == (8, 256)


@pytest.mark.parametrize(("name", "first_conv"), [("resnet18", "conv1"), ("mobilenet_v3_small", "features.0.0")])
def test_the_first_convolution_takes_c_channels_and_reloads_under_its_name(tmp_path, name, first_conv):
    model = SimSiam(name, channels=4, image_size=32, small_images=False, proj_dim=16, pred_hidden_dim=4).eval()
    conv = model.backbone.get_submodule(first_conv)
    assert conv.in_channels == 4
    assert model.backbone_info.description.endswith("; the first convolution takes 4 channels")
    assert model.backbone_info.loading_lines[-1].endswith("  # takes 4 channels")
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reload_as_documented(model, tmp_path)(x), model.features(x), atol=1e-5)


def test_a_timm_model_takes_c_channels(tmp_path):
    timm = pytest.importorskip("timm")
    if not timm.is_model("test_resnet"):
        pytest.skip("this timm has no test_resnet")
    model = SimSiam("timm:test_resnet", channels=13, image_size=32, proj_dim=16, pred_hidden_dim=4).eval()
    assert "in_chans=13" in model.backbone_info.loading_lines[1]
    x = torch.rand(2, 13, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reload_as_documented(model, tmp_path)(x), model.features(x), atol=1e-5)


def test_rgb_only_augmentations_are_off_for_other_channel_counts_and_said_so():
    # Every RGB-only step at full strength; with jitter off, the view is the crop alone.
    aug = Augment(size=12, mean=(0.0,) * 4, std=(1.0,) * 4, jitter_p=0.0, grayscale_p=1.0, solarize_p=1.0, hue=0.5, blur_p=0.0)
    assert aug.notes == [
        "4 channels: saturation and hue jitter, grayscale and solarization are for RGB and are off; "
        "crop, flips, rotation, blur and brightness/contrast jitter (per channel) apply"
    ]
    assert Augment(size=12).notes == []
    images = torch.rand(5, 4, 12, 12)
    p = aug.sample(5, 12, 12)
    p.crop = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 5)
    p.hflip[:] = False
    assert not p.gray.any() and not p.solarize.any()
    assert torch.allclose(aug.apply(images, p), images, atol=1e-5)


def test_brightness_and_contrast_jitter_draw_one_factor_per_channel():
    aug = Augment(size=8, mean=(0.5,) * 13, std=(0.5,) * 13, jitter_p=1.0, seed=0)
    p = aug.sample(6, 8, 8)
    assert p.brightness.shape == (6, 13) and p.contrast.shape == (6, 13)
    assert (p.brightness.std(dim=1) > 0).all() and p.brightness.min() >= 0.6 and p.brightness.max() <= 1.4
    # A flat image stays flat under contrast; each channel keeps its own level scaled by its own brightness.
    flat = torch.full((6, 13, 8, 8), 0.5)
    view = aug.apply(flat, p) * 0.5 + 0.5
    assert torch.allclose(view, (0.5 * p.brightness).clamp(0, 1)[:, :, None, None].expand_as(view), atol=1e-5)


def test_sixteen_bit_images_are_scaled_to_unit_range():
    aug = Augment(size=8, mean=(0.0,), std=(1.0,), jitter_p=0.0, seed=0)
    images = torch.full((2, 1, 8, 8), 65535, dtype=torch.int32).to(torch.uint16)
    assert torch.allclose(aug(images), torch.ones(2, 1, 8, 8))


def test_mean_and_std_must_give_one_value_per_channel():
    with pytest.raises(ConfigError, match=r"^mean: needs one value per channel: 4, got 3$"):
        Augment(size=8, channels=4, mean=(0.5, 0.5, 0.5), std=(0.2,) * 4)
    with pytest.raises(ConfigError, match=r"^std: needs one value per channel: 4, got 3$"):
        Augment(size=8, mean=(0.5,) * 4, std=(0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match=r"^mean: give one value per channel for 13-channel images \(ImageNet's mean is for RGB\)$"):
        Augment(size=8, channels=13)
    with pytest.raises(ConfigError, match="^std: must be positive"):
        Augment(size=8, mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match=r"expected a \(B, 4, H, W\) batch"):
        Augment(size=8, mean=(0.5,) * 4, std=(0.2,) * 4)(torch.rand(2, 3, 8, 8))
