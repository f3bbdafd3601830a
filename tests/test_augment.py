import shutil

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from simsiam import Augment
from simsiam.augment import adjust_brightness, adjust_contrast, adjust_saturation, gaussian_blur, shift_hue

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
    # Boxes of whole pixels, as torchvision's: each side rounded, so the area is 0.2-1 to within that rounding.
    sides = p.crop[:, 2:] * 40
    assert torch.equal(sides, sides.round()) and sides.min() >= 1
    area = p.crop[:, 2] * p.crop[:, 3]
    assert area.min() >= 0.18 and area.max() <= 1 + 1e-4
    reference = [RandomResizedCrop.get_params(torch.empty(3, 40, 40), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    assert abs(area.mean().item() - sum(h * w for _, _, h, w in reference) / (1600 * len(reference))) < 0.01
    corners = p.crop[:, :2] * 40 - sides / 2
    assert torch.allclose(corners, corners.round(), atol=1e-3)
    aspect = p.crop[:, 2] / p.crop[:, 3]
    assert aspect.min() >= 3 / 4 * 0.96 and aspect.max() <= 4 / 3 / 0.96  # 3/4-4/3, each side rounded
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
    # of fused kernels, call after call (eager on a CPU, in groups of samples taken out of order).
    aug = Augment(size=16, blur_p=0.5, solarize_p=0.2, vflip_p=0.5, rotate="90", seed=0)
    images = torch.rand(12, 3, 12, 12)
    render = torch.compile(aug.apply)
    for _ in range(2):
        params = aug.sample(12, 12, 12)
        assert torch.allclose(render(images, params), aug.apply(images, params), atol=1e-4)


def test_blur_matches_torchvision():
    # One sigma per sample; the kernel stops at four sigmas where that is short of the paper's 23 taps.
    x = torch.rand(4, 3, 64, 64)
    sigma = torch.tensor([0.1, 0.6, 1.3, 2.0])
    ours = gaussian_blur(x.clone(), sigma, 23)
    ref = torch.stack([TF.gaussian_blur(x[i], [23, 23], [s.item()] * 2) for i, s in enumerate(sigma)])
    assert torch.allclose(ours, ref, atol=1e-4)
    assert torch.equal(gaussian_blur(x.clone(), torch.zeros(4), 23), x)  # sigma 0: unchanged
    flat = torch.full((2, 3, 3, 3), 0.5)  # 3 px: a shorter kernel, still summing to 1
    assert torch.allclose(gaussian_blur(flat.clone(), torch.tensor([1.0, 2.0]), 23), flat, atol=1e-6)


def test_views_depend_on_neither_threads_nor_the_rest_of_the_batch():
    # Photo-sized batches are rendered a few samples at a time, in an order of their own,
    # shared out to threads: each view is what its image and its parameters make it.
    aug = Augment(size=64, blur_p=0.5, seed=0)
    images = torch.randint(0, 256, (96, 3, 72, 72), dtype=torch.uint8)
    params = aug.sample(96, 72, 72)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = aug.apply(images, params)
        torch.set_num_threads(1)
        one = aug.apply(images, params)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    alone = torch.cat([aug.apply(images[i : i + 1], params.take(slice(i, i + 1))) for i in (0, 37, 95)])
    assert torch.equal(alone, two[[0, 37, 95]])


def test_views_written_into_a_given_tensor():
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    out = torch.full((8, 3, 16, 16), float("nan"))
    assert Augment(size=16, seed=0)(images, out=out) is out
    assert torch.equal(out, Augment(size=16, seed=0)(images))
    with pytest.raises(ValueError, match="out: expected a contiguous float32 tensor of shape"):
        Augment(size=16, seed=0)(images, out=torch.empty(8, 3, 15, 15))
