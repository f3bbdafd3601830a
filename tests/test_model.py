import pytest
import torch

from simsiam import PredictionHead, ProjectionHead, SimSiam, simsiam_loss
from simsiam.config import cpu_has_bf16_units
from simsiam.loss import negative_cosine


def tiny_model(**kwargs):
    return SimSiam("resnet10-slim", small_images=True, proj_dim=64, proj_layers=2, pred_hidden_dim=16, **kwargs)


def test_loss_of_identical_inputs_is_minus_one():
    z = torch.randn(16, 32)
    assert torch.isclose(simsiam_loss(z, z, z, z), torch.tensor(-1.0), atol=1e-6)


def test_cross_entropy_loss_is_lowest_when_prediction_matches_target():
    z = torch.randn(16, 32) * 5
    matched = simsiam_loss(z, z, z, z, kind="cross_entropy")
    shuffled = simsiam_loss(z[torch.randperm(16)], z[torch.randperm(16)], z, z, kind="cross_entropy")
    assert matched < shuffled


def test_z_comes_back_detached_and_target_branch_gets_no_gradient():
    model = tiny_model()
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16).requires_grad_(True)
    p1, p2, z1, z2 = model(x1, x2)
    assert not z1.requires_grad and not z2.requires_grad
    assert p1.requires_grad and p2.requires_grad
    # D(p1, stopgrad(z2)): the view x2 is only a target here, so no gradient reaches it.
    negative_cosine(p1, z2).backward()
    assert x2.grad is None


def test_the_stop_gradient_ablation_is_one_switch():
    p1, p2, z1, z2 = tiny_model(stop_gradient=False)(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    assert z1.requires_grad and z2.requires_grad


def test_encoder_is_f_and_predictor_is_h():
    model = tiny_model()
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    p1, _, z1, _ = model(x, x)
    assert torch.equal(model.encoder(x), z1) and torch.equal(model.predictor(z1), p1)
    assert model.encoder.backbone is model.backbone


def test_every_parameter_gets_a_gradient():
    model = tiny_model()
    p1, p2, z1, z2 = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    simsiam_loss(p1, p2, z1, z2).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_loss_falls_over_a_few_steps():
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 3, 16, 16)
    losses = []
    for _ in range(15):
        p1, p2, z1, z2 = model(x, x + 0.1 * torch.randn_like(x))
        loss = simsiam_loss(p1, p2, z1, z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_heads_follow_the_paper():
    proj = ProjectionHead(512, 2048, 2048, num_layers=3)
    linears = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
    bns = [m for m in proj.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(linears) == 3 and all(lin.bias is None for lin in linears)  # every fc is followed by BN
    assert len(bns) == 3 and not bns[-1].affine and bns[0].affine  # output BN without affine
    assert not isinstance(list(proj.net)[-1], torch.nn.ReLU)  # no ReLU on the output
    pred = PredictionHead(2048)
    pred_linears = [m for m in pred.modules() if isinstance(m, torch.nn.Linear)]
    assert pred_linears[0].out_features == 512  # bottleneck: out/4
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in pred.modules()) == 1  # hidden layer only


def test_small_image_stem_keeps_resolution():
    model = SimSiam("resnet18", small_images=True, proj_layers=2)
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.skipif(not cpu_has_bf16_units(), reason="the CPU has no bf16 matrix units: bf16 would be emulated")
@pytest.mark.parametrize("small_images, size", [(False, 24), (False, 32), (True, 8)])
def test_cpu_bf16_gradients_are_finite_and_reproducible_when_asked_for(small_images, size):
    # float32 is the CPU default; --precision bf16-mixed still asks for bf16. From these
    # sizes up, layer4's first convolution sees at least a 2x2 input (one size below, a
    # 1x1 input, oneDNN's bf16 weight gradient of it is garbage): the same step,
    # repeated, must give the very same, finite gradients.
    torch.manual_seed(0)
    model = SimSiam("resnet10-slim", small_images=small_images, proj_dim=32, proj_layers=2, pred_hidden_dim=8)
    model = model.to(memory_format=torch.channels_last)
    x1, x2 = (torch.randn(8, 3, size, size).contiguous(memory_format=torch.channels_last) for _ in range(2))

    def gradients():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            simsiam_loss(*model(x1, x2)).backward()
        return [p.grad.clone() for p in model.parameters()]

    first = gradients()
    assert all(torch.isfinite(g).all() for g in first)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, gradients()))
