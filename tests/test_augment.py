import shutil

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from simsiam import Augment
from simsiam.augment import adjust_brightness, adjust_contrast, adjust_saturation, shift_hue

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_identical_images_get_different_views_within_range(device):
    aug = Augment(size=16, seed=0, blur_p=0.5, solarize_p=0.2)
    images = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8, device=device).expand(8, 3, 24, 24)
    views = aug(images)
    assert views.shape == (8, 3, 16, 16) and views.device.type == device
    assert torch.isfinite(views).all()
    flat = views.flatten(1)
    assert torch.cdist(flat, flat).triu(1)[torch.triu_indices(8, 8, 1).unbind()].min() > 0  # all pairs differ
    mean = torch.tensor(aug.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(aug.std, device=device).view(1, 3, 1, 1)
    pixels = views * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_parameters_follow_their_distributions(device):
    aug = Augment(size=32, seed=1)
    n = 20000
    p = aug.sample(n, 40, 40, device)
    area = p.crop[:, 2] * p.crop[:, 3]
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    aspect = p.crop[:, 2] / p.crop[:, 3]
    assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert abs(p.jitter.float().mean().item() - 0.8) < 0.02
    assert abs(p.gray.float().mean().item() - 0.2) < 0.02
    assert abs(p.hflip.float().mean().item() - 0.5) < 0.02
    jittered = p.jitter
    assert p.brightness[jittered].min() >= 0.6 and p.brightness[jittered].max() <= 1.4
    assert (p.brightness[~jittered] == 1).all() and (p.hue[~jittered] == 0).all()
    assert p.hue.abs().max() <= 0.1
    # crops stay inside the image
    assert (p.crop[:, 0] - p.crop[:, 2] / 2 >= -1e-5).all() and (p.crop[:, 0] + p.crop[:, 2] / 2 <= 1 + 1e-5).all()


def test_seed_makes_views_reproducible():
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    assert torch.equal(Augment(size=16, seed=3)(images), Augment(size=16, seed=3)(images))


def test_identity_parameters_reproduce_the_image():
    aug = Augment(size=16, mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.rand(3, 3, 16, 16)
    p = aug.sample(3, 16, 16)
    p.crop = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3)
    p.hflip[:] = False
    p.jitter[:] = False
    p.brightness[:] = 1
    p.contrast[:] = 1
    p.saturation[:] = 1
    p.hue[:] = 0
    p.gray[:] = False
    assert torch.allclose(aug.apply(images, p), images, atol=1e-5)


def test_hue_matches_torchvision():
    x = torch.rand(6, 3, 8, 8)
    shift = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.08, 0.1])
    ours = shift_hue(x, shift)
    ref = torch.stack([TF.adjust_hue(x[i], shift[i].item()) for i in range(6)])
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize(
    "ours, theirs",
    [(adjust_brightness, TF.adjust_brightness), (adjust_contrast, TF.adjust_contrast), (adjust_saturation, TF.adjust_saturation)],
)
def test_colour_steps_match_torchvision(ours, theirs):
    # In place, one factor per sample; the saturation step once took its gray from the already scaled image.
    x = torch.rand(5, 3, 8, 8)
    factor = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4])
    ref = torch.stack([theirs(x[i], factor[i].item()) for i in range(5)])
    assert torch.allclose(ours(x.clone(), factor), ref, atol=1e-5)


def test_rotation_and_vertical_flip_options_run():
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    for rotate in ("90", "free"):
        out = Augment(size=16, rotate=rotate, vflip_p=0.5, seed=0)(images)
        assert out.shape == (4, 3, 16, 16) and torch.isfinite(out).all()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="min_scale"):
        Augment(min_scale=0)
    with pytest.raises(ValueError, match="rotate"):
        Augment(rotate="sideways")


def test_cpu_subset_path_equals_the_gpu_where_path():
    from simsiam.augment import where_samples

    x = torch.rand(6, 3, 8, 8)
    mask = torch.tensor([True, False, True, True, False, False])
    shift = torch.linspace(-0.1, 0.1, 6)
    subset = where_samples(mask, lambda i: shift_hue(x[i], shift[i]), x.clone())
    everywhere = torch.where(mask[:, None, None, None], shift_hue(x, shift), x)
    assert torch.allclose(subset, everywhere, atol=1e-6)


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_rendering_equals_the_eager_one():
    # --compile-augment: the same parameters give the same views, to the float rounding
    # of fused kernels, call after call.
    aug = Augment(size=16, blur_p=0.5, solarize_p=0.2, seed=0)
    images = torch.randint(0, 256, (12, 3, 20, 20), dtype=torch.uint8)
    render = torch.compile(aug.apply)
    for _ in range(2):
        params = aug.sample(12, 20, 20)
        assert torch.allclose(render(images, params), aug.apply(images, params), atol=1e-4)
