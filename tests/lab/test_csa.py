"""The cosine-similarity attack: Softplus copy, differentiable maps, and a higher S1 mean."""

import torch
from torch import nn

from attacks.base import TargetMode
from attacks.pgd import PGD
from detectors.csm import cosine_similarity_matrix
from detectors.engine import EngineOptions, GradientEngine
from gga_lab.csa import CSA, ranked_classes, s1_mean, saliency_maps, with_softplus
from models.architectures import build_model


def _detector_s1(model, x):
    maps = saliency_maps(model, x, beta=None, create_graph=False)
    with torch.no_grad():
        k = model(x).argmax(1)
    return s1_mean(cosine_similarity_matrix(maps), k)


def test_with_softplus_copies_weights_and_leaves_the_original_alone(trained_lenet, mnist):
    smooth = with_softplus(trained_lenet)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert any(isinstance(m, nn.ReLU) for m in trained_lenet.modules())
    assert smooth.config.activation == "softplus" and trained_lenet.config.activation == "relu"
    for (name, p), q in zip(
        trained_lenet.state_dict().items(), smooth.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    x, _y = mnist["test"].x, mnist["test"].y
    with torch.no_grad():
        agree = (smooth(x).argmax(1) == trained_lenet(x).argmax(1)).float().mean()
    assert agree > 0.97


def test_with_softplus_equals_rebuilding_with_softplus_config(trained_lenet):
    rebuilt = build_model("lenet", {**trained_lenet.config.__dict__, "activation": "softplus"})
    rebuilt.load_state_dict(trained_lenet.state_dict())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(with_softplus(trained_lenet)(x), rebuilt(x))


def test_softplus_gives_the_second_derivatives_relu_lacks(trained_lenet, correct_batch):
    x = correct_batch.x[:4].clone().requires_grad_(True)
    for model, expect_nonzero in ((trained_lenet, False), (with_softplus(trained_lenet), True)):
        # Second derivative of the logit along a direction: zero for a piecewise-linear net.
        (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
        if not g.requires_grad:
            assert not expect_nonzero
            continue
        (h,) = torch.autograd.grad((g * torch.ones_like(g)).sum(), x)
        assert (h.abs().sum() > 0) == expect_nonzero


def test_surrogate_maps_approach_sign_maps_and_their_gradient_is_exact():
    torch.manual_seed(0)
    # A smooth net (no max pooling) in float64, so finite differences are meaningful.
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Softplus(beta=2), nn.Linear(16, 5))
    net = net.double().eval()
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    exact = saliency_maps(net, x, beta=None, create_graph=False)
    sharp = saliency_maps(net, x, beta=1e4, create_graph=False)
    assert ((exact - sharp).abs() < 1e-2).float().mean() > 0.99
    k = torch.tensor([0, 1, 2])

    def f(inp):
        return s1_mean(cosine_similarity_matrix(saliency_maps(net, inp, beta=3.0)), k).sum()

    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xr), xr)
    d = torch.randn_like(x)
    h = 1e-6
    numeric = (f(x + h * d) - f(x - h * d)) / (2 * h)
    assert torch.allclose((grad * d).sum(), numeric, rtol=1e-4, atol=1e-8)


def test_s1_mean_excludes_the_predicted_class():
    csm = torch.eye(4).repeat(2, 1, 1)
    csm[:, 0, 1] = csm[:, 1, 0] = 0.9  # the pair (0, 1) only
    got = s1_mean(csm, torch.tensor([2, 0]))
    # k=2: pairs (0,1),(0,3),(1,3) -> 0.9/3; k=0: pairs (1,2),(1,3),(2,3) -> 0
    assert torch.allclose(got, torch.tensor([0.3, 0.0]))


def test_csa_raises_the_s1_mean_over_pgd(trained_lenet, correct_batch):
    x, y = correct_batch.x[:16], correct_batch.y[:16]
    pgd = PGD(trained_lenet, eps=0.3, steps=10, seed=0)(x, y)
    csa = CSA(trained_lenet, eps=0.3, steps=10, seed=0)(x, y)
    assert (csa.x_adv - x).abs().max() <= 0.3 + 1e-6
    assert csa.success.sum() >= 4
    s1_pgd = _detector_s1(trained_lenet, pgd.x_adv)[pgd.success].mean()
    s1_csa = _detector_s1(trained_lenet, csa.x_adv)[csa.success].mean()
    assert s1_csa > s1_pgd + 0.05, (float(s1_csa), float(s1_pgd))


def test_targeted_csa_aims_at_the_target(trained_lenet, correct_batch):
    x, y = correct_batch.x[:8], correct_batch.y[:8]
    result = CSA(trained_lenet, eps=0.3, steps=5, target_mode=TargetMode.RANDOM, seed=0)(x, y)
    assert (result.target != y).all()
    assert torch.equal(result.success, result.pred == result.target)
    with torch.no_grad():
        p0 = trained_lenet(x).softmax(1).gather(1, result.target[:, None]).mean()
        p1 = trained_lenet(result.x_adv).softmax(1).gather(1, result.target[:, None]).mean()
    assert p1 > p0


def test_ranked_classes_read_the_most_probable_first_or_the_wanted_class_first():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert ranked_classes(logits, 3).tolist() == [[1, 2, 4], [0, 1, 2]]
    first = torch.tensor([3, 2])
    assert ranked_classes(logits, 3, first=first).tolist() == [[3, 1, 2], [2, 0, 1]]


def test_top_n_csa_sees_the_csm_the_top_n_engine_reads(trained_lenet, correct_batch):
    x = correct_batch.x[:6]
    engine = GradientEngine(trained_lenet, EngineOptions(top_n=4, rescale_logits=True))
    out = engine(x)
    predicted_first = torch.zeros(len(x), dtype=torch.long)
    from_engine = s1_mean(out.csm, predicted_first)  # row 0 is the predicted class
    attack = CSA(trained_lenet, eps=0.3, steps=1, seed=0, top_n=4)
    assert torch.allclose(attack.detector_s1(x, out.predicted), from_engine, atol=1e-5)
    # Reading all ten classes is a different matrix: the top-4 rows are not a free choice.
    every = CSA(trained_lenet, eps=0.3, steps=1, seed=0).detector_s1(x, out.predicted)
    assert not torch.allclose(every, from_engine, atol=1e-3)


def test_top_n_csa_raises_the_s1_mean_the_top_n_detector_sees(trained_lenet, correct_batch):
    x, y = correct_batch.x[:16], correct_batch.y[:16]
    pgd = PGD(trained_lenet, eps=0.3, steps=10, seed=0)(x, y)
    attack = CSA(trained_lenet, eps=0.3, steps=10, seed=0, top_n=4)
    csa = attack(x, y)
    assert csa.success.sum() >= 4
    s1_pgd = attack.detector_s1(pgd.x_adv, pgd.pred)[pgd.success].mean()
    s1_csa = attack.detector_s1(csa.x_adv, csa.pred)[csa.success].mean()
    assert s1_csa > s1_pgd + 0.05, (float(s1_csa), float(s1_pgd))
