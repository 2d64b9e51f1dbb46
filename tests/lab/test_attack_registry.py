"""The lab's one attack registry: the package's attacks plus CSA; every kind is built from it."""

import numpy as np
import pytest
import torch

from attacks.base import TargetMode
from attacks.registry import ATTACKS
from gga_cli import main
from gga_lab.attack_registry import LAB_ATTACKS, AttackKind
from gga_lab.csa import CSA
from gga_lab.evaluate import (
    ALL_KINDS,
    OOD_KINDS,
    PIPELINE_KINDS,
    EvalConfig,
    attack_budgets,
    attack_kinds,
)
from gga_lab.untrusted import TRAINING_KINDS, training_attack_kinds
from models.architectures import build_model
from tests.attacks.test_contract import check_contract, check_targeted_contract, contract_cases

LAB_ONLY = [n for n in LAB_ATTACKS if n not in ATTACKS]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("lenet", {"conv1_channels": 4, "conv2_channels": 8, "hidden": 16})


def test_the_lab_adds_csa_to_the_package_attacks():
    assert list(LAB_ATTACKS) == [*ATTACKS, "csa"] and LAB_ONLY == ["csa"]
    assert LAB_ATTACKS.spec("csa").cls is CSA


@pytest.mark.parametrize(("name", "norm"), list(contract_cases(LAB_ATTACKS, LAB_ONLY)))
def test_the_lab_attacks_keep_the_contract(model, name, norm):
    check_contract(LAB_ATTACKS, model, name, norm, {"steps": 2})


def test_csa_keeps_the_targeted_contract(model):
    check_targeted_contract(LAB_ATTACKS, model, "csa", {"steps": 2})


# The attacks the evaluation's kinds were built from before they went through the registry:
# (class name, {attribute: value}) with the default config's budgets on MNIST.
EVAL_ATTACKS = {
    "noise": ("UniformNoise", {"eps": 0.3, "norm": "linf"}),
    "pgd_linf": ("PGD", {"eps": 0.3, "steps": 70, "norm": "linf", "early_stop": False}),
    "pgd_linf_min": ("PGD", {"eps": 0.3, "steps": 70, "early_stop": True}),
    "pgd_l2": ("PGD", {"eps": pytest.approx(3.0), "steps": 70, "norm": "l2"}),
    "rotation": ("Rotation", {"max_degrees": 45.0}),
    "lbfgs": ("LBFGS", {}),
    "tpgd_ce": ("PGD", {"loss": "ce", "target_mode": TargetMode.RANDOM, "steps": 70}),
    "tpgd_mse": ("PGD", {"loss": "mse", "target_mode": TargetMode.RANDOM, "steps": 70}),
    "csa": ("CSA", {"eps": 0.3, "steps": 100, "top_n": None}),
    "ood_corrupted": ("Corruption", {"corruption": "random", "severity": 5}),
    "corrupted_wrong": ("Corruption", {"corruption": "random", "severity": 5}),
}


def test_every_evaluation_kind_an_attack_makes_is_built_through_the_registry(model):
    cfg = EvalConfig()
    kinds = attack_kinds(attack_budgets("mnist", cfg), cfg)
    assert set(kinds) == set(EVAL_ATTACKS)
    # The rest are data sets, or attacks on the served pipeline (the adaptive attack on the trust
    # score), which a registered attack, knowing only the model, cannot be.
    assert set(ALL_KINDS) - set(kinds) <= set(OOD_KINDS) | set(PIPELINE_KINDS)
    for kind, (cls_name, attributes) in EVAL_ATTACKS.items():
        attack = kinds[kind].make(model)
        assert type(attack).__name__ == cls_name, kind
        assert {a: getattr(attack, a) for a in attributes} == attributes, kind
        assert attack.generator is not None, kind  # seeded
    keep = {kind: k.keep for kind, k in kinds.items()}
    assert keep["noise"] == "all" and keep["ood_corrupted"] == "failures"
    assert {keep[k] for k in kinds if k not in ("noise", "ood_corrupted")} == {"successes"}


def test_csa_attacks_the_rows_the_evaluated_detector_reads(model):
    cfg = EvalConfig()
    kinds = attack_kinds(attack_budgets("mnist", cfg), cfg, rows=4)
    assert kinds["csa"].make(model).top_n == 4


def test_the_training_kinds_are_built_through_the_registry(model):
    kinds = training_attack_kinds(eps=0.1, seed=3, pgd_steps=7)
    assert set(kinds) < set(TRAINING_KINDS) and "deepfool" in TRAINING_KINDS
    assert type(kinds["deepfool"].make(model)).__name__ == "DeepFool"
    fgsm, pgd, pgd_min = (kinds[k].make(model) for k in ("fgsm", "pgd", "pgd_min"))
    assert type(fgsm).__name__ == "FGSM" and fgsm.eps == 0.1
    assert (pgd.steps, pgd.early_stop, pgd_min.early_stop) == (7, False, True)
    assert kinds["noise"].keep == "all" and kinds["pgd"].keep == "successes"


def test_a_kind_keeps_what_it_says(model):
    x = torch.rand(12, 1, 28, 28)
    y = torch.arange(12) % 10
    params = {"severity": 5, "seed": 0}
    made = {
        keep: AttackKind("corruption", params, keep=keep).run(model, x, y, 5, "", False)
        for keep in ("all", "successes", "failures")
    }
    (everything, hits) = made["all"]
    assert len(everything) == 12 and made["successes"][1] == made["failures"][1] == hits
    assert len(made["successes"][0]) == hits and len(made["failures"][0]) == 12 - hits
    assert AttackKind("noise").run(model, x[:0], y[:0], 5, "", False)[0].shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match="keep must be one of"):
        AttackKind("noise", keep="some")


def test_gga_attack_runs_csa_from_the_lab_registry(tmp_path, lenet_repo, shared_data_dir):
    repo, name = lenet_repo, "mnist-small"
    out = tmp_path / "csa.npz"
    argv = ["attack", "--model", name, "--repo", str(repo), "--attack", "csa", "--eps", "0.3"]
    argv += ["--steps", "3", "--n", "6", "--data-dir", str(shared_data_dir), "--out", str(out)]
    assert main(argv) == 0
    data = np.load(out)
    assert data["x_adv"].shape == (6, 1, 28, 28)
    assert np.abs(data["x_adv"] - data["x"]).max() <= 0.3 + 1e-6
