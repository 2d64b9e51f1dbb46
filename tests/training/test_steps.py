"""The step functions: one per training regime, chosen once from the recipe, each giving the loss
its regime defines on a tiny linear model (whose input gradients have a closed form)."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from attacks.fgsm import FGSM
from gga_training.recipe import AdversarialSection, Recipe, recipe_from_dict
from gga_training.steps import (
    STEPS,
    StepContext,
    adversarial_step,
    choose_step,
    distillation_step,
    fast_at_step,
    regime,
    standard_step,
    vat_step,
)
from gga_training.train import train
from models.errors import RecipeError
from tests.helpers.models import TinyLinear, seeded


def _recipe(**sections):
    return recipe_from_dict(
        {"name": "steps", "architecture": "lenet", "dataset": "mnist", **sections}
    )


def _context(recipe, teacher=None, x_unl=None):
    model = seeded(TinyLinear).train()
    return StepContext(
        recipe=recipe,
        model=model,
        forward=model,
        generator=torch.Generator().manual_seed(0),
        teacher=teacher,
        x_unl=torch.empty(0) if x_unl is None else x_unl,
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    # Inside [0.2, 0.8]: an eps = 0.1 step is never clipped to [0, 1].
    x = 0.2 + 0.6 * torch.rand(8, 1, 8, 8, generator=g)  # (B, C, H, W), TinyLinear's shape
    return x, torch.randint(0, 5, (8,), generator=g)


@pytest.mark.parametrize(
    ("sections", "name", "step"),
    [
        ({}, "standard", standard_step),
        ({"distillation": {"teacher": "t"}}, "distillation", distillation_step),
        ({"adversarial": {"method": "fgsm"}}, "fgsm", adversarial_step),
        ({"adversarial": {"method": "pgd"}}, "pgd", adversarial_step),
        ({"adversarial": {"method": "fgsm-rs"}}, "fgsm-rs", fast_at_step),
        # A teacher changes adversarial training's clean loss, not its step function.
        (
            {"adversarial": {"method": "pgd"}, "distillation": {"teacher": "t"}},
            "pgd",
            adversarial_step,
        ),
    ],
)
def test_the_recipe_chooses_its_regime_step(sections, name, step):
    recipe = _recipe(**sections)
    assert regime(recipe) == name
    assert STEPS[name] is step
    assert choose_step(recipe) is step


@pytest.mark.parametrize("sections", [{}, {"adversarial": {"method": "fgsm-rs"}}])
def test_vat_adds_its_term_to_the_regime_step(sections):
    recipe = _recipe(vat={}, **sections)
    step = choose_step(recipe)
    assert isinstance(step, functools.partial) and step.func is vat_step
    assert step.keywords["inner"] is STEPS[regime(recipe)]


def test_an_unknown_regime_is_refused_before_any_work(tmp_path):
    # recipe_from_dict refuses the method; a Recipe built directly reaches the registry.
    recipe = Recipe(
        name="steps",
        architecture="lenet",
        dataset="mnist",
        adversarial=AdversarialSection(method="trades"),
    )
    with pytest.raises(RecipeError, match=r"no training step for regime 'trades' \(known: "):
        choose_step(recipe)
    with pytest.raises(RecipeError, match="'trades'"):
        train(recipe, tmp_path / "m", data_dir=tmp_path / "no-data", progress=False)
    assert not (tmp_path / "m").exists()


def test_standard_step_is_label_smoothed_cross_entropy():
    ctx = _context(_recipe(optim={"label_smoothing": 0.1}))
    x, y = _batch()
    loss, logits = standard_step(ctx, x, y)
    torch.testing.assert_close(logits, ctx.model(x))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))


def test_distillation_from_an_identical_teacher_leaves_only_the_label_term():
    recipe = _recipe(distillation={"teacher": "t", "temperature": 4.0, "weight": 0.75})
    ctx = _context(recipe)
    ctx.teacher = copy.deepcopy(ctx.model).eval()
    x, y = _batch()
    loss, logits = distillation_step(ctx, x, y)
    # KL(teacher || student) = 0, so only (1 - weight) * CE is left.
    torch.testing.assert_close(loss, 0.25 * F.cross_entropy(logits, y))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_adversarial_step_mixes_clean_and_fgsm_losses(alpha):
    ctx = _context(_recipe(adversarial={"method": "fgsm", "eps": 0.1, "alpha": alpha}))
    x, y = _batch()
    loss, logits = adversarial_step(ctx, x, y)
    clean = F.cross_entropy(ctx.model(x), y)
    x_adv = FGSM(ctx.model, eps=0.1)(x, y).x_adv
    adversarial = F.cross_entropy(ctx.model(x_adv), y)
    torch.testing.assert_close(logits, ctx.model(x))  # the clean inputs' logits
    torch.testing.assert_close(loss, alpha * clean + (1 - alpha) * adversarial)
    # Cross-entropy is convex in the input of a linear model: the signed step raises it.
    assert adversarial > clean
    assert ctx.model.training  # the attack ran in eval mode and put train mode back


def test_fast_at_step_draws_its_start_from_the_run_generator():
    ctx = _context(_recipe(adversarial={"method": "fgsm-rs", "eps": 0.1, "alpha": 0.0}))
    x, y = _batch()
    global_state = torch.get_rng_state()
    loss, logits = fast_at_step(ctx, x, y)
    assert torch.equal(torch.get_rng_state(), global_state)  # a resume restores the generator
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    assert not torch.allclose(logits, ctx.model(x))  # the adversarial inputs' logits
    again = fast_at_step(ctx, x, y)[0]  # the generator moved on: another random start
    assert again != loss
    ctx.generator.manual_seed(0)
    assert fast_at_step(ctx, x, y)[0] == loss


def test_vat_step_adds_a_positive_term_and_draws_unlabelled_images():
    x, y = _batch()
    ctx = _context(_recipe(vat={"eps": 1.0, "alpha": 2.0}), x_unl=torch.rand(20, 1, 8, 8))
    before = ctx.generator.get_state()
    loss, logits = vat_step(ctx, x, y, inner=standard_step)
    inner_loss, inner_logits = standard_step(ctx, x, y)
    torch.testing.assert_close(logits, inner_logits)
    assert loss > inner_loss  # KL >= 0, and > 0 off a constant model
    assert not torch.equal(ctx.generator.get_state(), before)  # one draw of unlabelled images


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"adversarial": {"method": "fgsm", "eps": 0.1}},
        {"adversarial": {"method": "pgd", "eps": 0.1, "steps": 3, "alpha": 0.0}},
        {"adversarial": {"method": "fgsm-rs", "eps": 0.1, "alpha": 0.0}},
        {"vat": {"eps": 1.0}},
    ],
    ids=["standard", "fgsm", "pgd", "fgsm-rs", "vat"],
)
def test_a_few_steps_on_one_batch_lower_the_regime_loss(sections):
    torch.manual_seed(0)  # PGD's random start and VAT's direction use the global generator
    ctx = _context(_recipe(**sections))
    step = choose_step(ctx.recipe)
    x, y = _batch()
    optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1)
    losses = []
    for _ in range(10):
        loss, _ = step(ctx, x, y)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ctx.model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
