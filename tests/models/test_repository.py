"""Model folders: card + safetensors round trip, and every way a folder can be wrong."""

import json

import pytest
import torch
from safetensors.torch import save_file

from models.architectures import build_model, config_to_dict
from models.card import WEIGHTS_FILE, ModelCard
from models.errors import ModelLoadError, ModelNotFoundError
from models.repository import ModelRepository, load_model_folder, save_model_folder


def _card(name: str = "tiny", architecture: str = "lenet", config=None) -> ModelCard:
    model = build_model(architecture, config or {})
    return ModelCard(
        name=name,
        version="0.1.0",
        architecture=architecture,
        config=config_to_dict(model.config),
        input_shape=(1, 28, 28),
        class_names=tuple(str(i) for i in range(10)),
        dataset="mnist",
    ), model


def test_round_trip_gives_identical_outputs(tmp_path):
    card, model = _card()
    written = save_model_folder(tmp_path / "tiny", card, model)
    loaded = load_model_folder(tmp_path / "tiny")
    assert loaded.card == written
    assert len(written.weights_sha256) == 64
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.module(x))
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_the_same_weights_always_get_the_same_hash(tmp_path):
    # The hash names the weights: saving them again (a resumed run, a re-export) must not
    # change it. safetensors orders its metadata map differently from one call to the next.
    card, model = _card()
    hashes = {save_model_folder(tmp_path / f"m{i}", card, model).weights_sha256 for i in range(8)}
    assert len(hashes) == 1


def test_card_json_is_plain_and_complete(tmp_path):
    card, model = _card()
    save_model_folder(tmp_path / "tiny", card, model)
    data = json.loads((tmp_path / "tiny" / "card.json").read_text())
    for key in (
        "name",
        "version",
        "architecture",
        "config",
        "input_shape",
        "class_names",
        "dataset",
        "recipe",
        "metrics",
        "created_at",
        "weights_sha256",
    ):
        assert key in data
    assert data["input_shape"] == [1, 28, 28]


def test_changed_weights_are_refused_by_hash(tmp_path):
    card, model = _card()
    save_model_folder(tmp_path / "tiny", card, model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc2.bias"] += 1
    save_file(state, str(tmp_path / "tiny" / WEIGHTS_FILE))
    with pytest.raises(ModelLoadError, match="does not match the card"):
        load_model_folder(tmp_path / "tiny")


def test_weights_of_another_architecture_are_refused_by_shape(tmp_path):
    card, model = _card()
    save_model_folder(tmp_path / "tiny", card, model)
    other = build_model("lenet", {"hidden": 300})
    save_file(dict(other.state_dict()), str(tmp_path / "tiny" / WEIGHTS_FILE))
    card.weights_sha256 = ""  # skip the hash check to reach the shape check
    card.save(tmp_path / "tiny")
    with pytest.raises(ModelLoadError, match="shape mismatch"):
        load_model_folder(tmp_path / "tiny")


def test_class_names_must_match_the_output_size(tmp_path):
    card, model = _card()
    card.class_names = ("a", "b", "c")
    save_model_folder(tmp_path / "tiny", card, model)
    with pytest.raises(ModelLoadError, match="3 class names"):
        load_model_folder(tmp_path / "tiny")


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"name": "x"}', "missing field"), ("[]", "JSON object")],
)
def test_malformed_cards_are_refused(tmp_path, content, message):
    card, model = _card()
    save_model_folder(tmp_path / "tiny", card, model)
    (tmp_path / "tiny" / "card.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model_folder(tmp_path / "tiny")


def test_missing_weights_and_garbage_weights(tmp_path):
    card, model = _card()
    save_model_folder(tmp_path / "tiny", card, model)
    weights = tmp_path / "tiny" / WEIGHTS_FILE
    weights.write_bytes(b"not safetensors at all")
    card.weights_sha256 = ""
    card.save(tmp_path / "tiny")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model_folder(tmp_path / "tiny")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_model_folder(tmp_path / "tiny")


def test_repository_lists_and_rejects_unknown_names(tmp_path):
    for name in ("b-model", "a-model"):
        card, model = _card(name)
        save_model_folder(tmp_path / name, card, model)
    (tmp_path / "not-a-model").mkdir()
    repo = ModelRepository(tmp_path)
    assert repo.names() == ["a-model", "b-model"]
    with pytest.raises(ModelNotFoundError, match="available: a-model, b-model"):
        repo.load("nope")
    with pytest.raises(ModelNotFoundError):
        repo.load("../a-model")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ModelRepository(tmp_path / "missing")
