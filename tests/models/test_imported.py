"""Imported models: the same BatchNorm conv net as ONNX, torch.export and TorchScript, imported,
fitted on an image folder and compared with the module it came from; and every file refused."""

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from detectors.pipeline import load_pipeline
from detectors.views.blocks import BlocksView
from gga_cli import main
from gga_lab.flags import flagged_and_correct
from gga_lab.metrics import auroc
from models.blocks import block_features
from models.data import load_dataset
from models.errors import DataError, ModelLoadError
from models.imported.errors import ModelImportError
from models.imported.exporting import export_three_ways
from models.imported.importer import ImportOptions, import_model
from models.repository import ModelRepository
from tests.helpers.imported import (
    INPUT_SHAPE,
    MEAN,
    STD,
    PixelNet,
    SmallBNNet,
    safe_names,
    train_small_bn_net,
    write_image_folder,
)

FORMATS = ("onnx", "torch-export", "torchscript")
ALPHA = 0.05
FIT_ARGS = [
    "--n-fit", "600", "--n-view-cal", "150", "--n-tune", "150", "--n-cal", "500",
    "--pgd-steps", "5", "--bins", "10", "--rescale", "on",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: torch's thread pool would only fight
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net(shared_data_dir: Path) -> SmallBNNet:
    train = load_dataset("fashion-mnist", "train", data_dir=shared_data_dir, limit=4096)
    return train_small_bn_net(train)


@pytest.fixture(scope="module")
def files(net: SmallBNNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_three_ways(net, tmp_path_factory.mktemp("exports"), INPUT_SHAPE)


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    test = load_dataset("fashion-mnist", "test", data_dir=shared_data_dir, limit=10)
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(safe_names(test.class_names)) + "\n")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """2,000 training images (none of the test set) as a folder of class folders of PNGs."""
    data = load_dataset("fashion-mnist", "train", data_dir=shared_data_dir, limit=2000, seed=1)
    return write_image_folder(data, tmp_path_factory.mktemp("images") / "fmnist")


@pytest.fixture(scope="module")
def held_out(shared_data_dir: Path):
    """500 test images: never seen by the training, the fit or its calibration."""
    return load_dataset("fashion-mnist", "test", data_dir=shared_data_dir, limit=500)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _import_args(path: Path, name: str, repo: Path, labels: Path) -> list[str]:
    args = ["import", str(path), "--name", name, "--repo", str(repo), "--labels", str(labels)]
    return [*args, "--mean", str(MEAN), "--std", str(STD), "--input-shape", "1,28,28"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_imports_fits_and_matches_the_original(
    fmt, net, files, labels, images, held_out, tmp_path, capsys
):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(_import_args(files[fmt], "user-net", repo, labels)) == 0
    card = ModelRepository(repo).card("user-net")
    assert card.architecture == "imported" and card.config["format"] == fmt
    assert card.weights_sha256 == hashlib.sha256(files[fmt].read_bytes()).hexdigest()
    assert card.config["source"] == str(files[fmt].resolve())
    assert card.class_names == tuple(labels.read_text().split("\n")[:10])
    assert card.preprocessing.color_mode == "L" and card.input_shape == INPUT_SHAPE
    assert card.config["checks"]["repeat_max_diff"] == 0.0
    if fmt == "onnx":
        parity = card.config["onnx"]["parity"]
        assert parity["max_abs_diff"] <= 1e-4 and parity["same_argmax"] == 1.0
        assert card.config["onnx"]["compute"]["predictions"].startswith("torch")
    # torch.export and ONNX graphs are cut at the final linear layer's input; TorchScript is not.
    assert (card.config["features"] is None) == (fmt == "torchscript")

    loaded = ModelRepository(repo).load("user-net")
    original = PixelNet(net).eval()
    x = held_out.float()
    with torch.no_grad():
        assert torch.equal(loaded.module(x).argmax(1), original(x).argmax(1))
    ours, theirs = GradientEngine(loaded.module)(x[:64]), GradientEngine(original)(x[:64])
    csm_diff = float((ours.csm - theirs.csm).abs().max())
    assert csm_diff <= 1e-5, f"{fmt}: CSM differs from the original's by {csm_diff}"

    assert main(["fit", "user-net", "--data", str(images), "--repo", str(repo), *FIT_ARGS]) == 0
    assert "accuracy all" in capsys.readouterr().out
    loaded = ModelRepository(repo).load("user-net")
    pipeline = load_pipeline(loaded.path, loaded.module, loaded.card.weights_sha256)
    feature_views = {"mahalanobis", "knn", "gradnorm"} & set(pipeline.scorer.views)
    assert bool(feature_views) == (fmt != "torchscript")
    flagged, correct = flagged_and_correct(pipeline, x, held_out.y)
    false_alarms = float(flagged[correct].mean())
    print(f"{fmt}: CSM max diff {csm_diff:.2e}, accuracy {correct.mean():.3f}, "
          f"false alarms {false_alarms:.3f} on {int(correct.sum())} held-out")  # fmt: skip
    assert abs(false_alarms - ALPHA) <= 0.03, f"{fmt}: false alarms {false_alarms:.3f}"


class _Sentinel:
    """Unpickling this creates a file: proof that a refused file was never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["module", "object", "state_dict", "legacy", "raw"])
def test_pickles_are_refused_without_being_unpickled(kind, net, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    if kind == "module":
        torch.save(net, path)
    elif kind == "object":
        torch.save({"model": _Sentinel(marker)}, path)
    elif kind == "state_dict":
        torch.save(net.state_dict(), path)
    elif kind == "legacy":
        torch.save(_Sentinel(marker), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(_Sentinel(marker), protocol=4))
    with pytest.raises(ModelImportError, match=r"torch\.export\.save") as err:
        import_model(path, repo, ImportOptions(name="pickled", input_shape=INPUT_SHAPE))
    expected = "state_dict" if kind == "state_dict" else "refused"
    assert expected in str(err.value)
    assert not marker.exists() and _snapshot(repo) == {}


def _onnx_with(op: helper.NodeProto, domain: str | None, opset: int) -> onnx.ModelProto:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 3], np.ones(192).tolist())
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        op,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=opsets)


# Opset 21: no converter at the graph's own opset, nor after onnx's version converter takes the
# graph to opset 17; the error names the operator as the file has it.
@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize(
    ("op", "domain", "named"),
    [
        (helper.make_node("Shrink", ["z"], ["logits"], lambd=0.5), None, "Shrink (opset {})"),
        (helper.make_node("Hardmax", ["z"], ["logits"]), None, "Hardmax (opset {})"),
        (
            helper.make_node("Calibrate", ["z"], ["logits"], domain="com.acme"),
            "com.acme",
            "com.acme::Calibrate (opset 1)",
        ),
    ],
    ids=["Shrink", "Hardmax", "custom-domain"],
)
def test_an_unconvertible_onnx_operator_is_named(op, domain, named, opset, tmp_path):
    path = tmp_path / "graph.onnx"
    onnx.save(_onnx_with(op, domain, opset), path)
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(ModelImportError, match="cannot convert operator") as err:
        import_model(path, repo, ImportOptions(name="g"))
    assert named.format(opset) in str(err.value)
    assert _snapshot(repo) == {}


def test_bad_files_and_options_get_a_clear_error_and_change_nothing(net, files, labels, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(_import_args(files["torch-export"], "kept", repo, labels)) == 0
    before = _snapshot(repo)

    def refused(path: Path, match: str, **options) -> None:
        options.setdefault("input_shape", INPUT_SHAPE)
        with pytest.raises(ModelImportError, match=match):
            import_model(path, repo, ImportOptions(**{"name": "new", **options}))
        assert _snapshot(repo) == before

    for path in files.values():
        cut = tmp_path / f"truncated-{path.name}"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        refused(cut, "truncated|corrupt|not an ONNX|not a valid ONNX")
    text = tmp_path / "notes.txt"
    text.write_text("not a model at all\n")
    refused(text, "not an ONNX, torch.export")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    refused(empty, "empty")

    dynamic = tmp_path / "dynamic.onnx"
    torch.onnx.export(
        net,
        (torch.rand(2, *INPUT_SHAPE),),
        str(dynamic),
        input_names=["input"],
        dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    refused(dynamic, r"1,\?,\?: dynamic dimensions.*--input-shape", input_shape=None)
    refused(files["onnx"], "contradicts the file's input shape", input_shape=(3, 28, 28))

    nine = tmp_path / "nine.txt"
    nine.write_text("\n".join(labels.read_text().split("\n")[:9]))
    refused(files["onnx"], "9 class names, but the model outputs 10", labels=nine)
    refused(files["onnx"], "already exists.*--force", name="kept")
    refused(files["onnx"], "--features fc1_gemm: not the input", features="fc1_gemm")

    replaced = import_model(files["onnx"], repo, ImportOptions(name="kept", force=True))
    assert replaced.config["format"] == "onnx" and not list(repo.glob(".*"))


def test_a_folder_whose_file_does_not_match_its_hash_is_not_loaded(files, labels, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(_import_args(files["onnx"], "user-net", repo, labels)) == 0
    graph = repo / "user-net" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match the card"):
        ModelRepository(repo).load("user-net")


def test_a_graph_traced_in_train_mode_is_refused_and_torchscript_runs_in_eval(net, tmp_path):
    example = torch.rand(2, *INPUT_SHAPE)
    trained = SmallBNNet().train()
    trained.load_state_dict(net.state_dict())
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "train-mode.pt2"
    # torch.export bakes the mode into the graph: BatchNorm on batch statistics cannot be undone.
    torch.export.save(torch.export.export(trained, (example,), dynamic_shapes=({0: batch},)), path)
    with pytest.raises(ModelImportError, match="BatchNorm uses batch statistics"):
        import_model(path, tmp_path, ImportOptions(name="bn"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-mode.pt2"]
    # A TorchScript module keeps its modes switchable: the import runs it in eval mode.
    scripted = tmp_path / "train-mode.pt"
    torch.jit.save(torch.jit.script(trained), scripted)
    import_model(scripted, tmp_path, ImportOptions(name="ts", input_shape=INPUT_SHAPE))
    loaded = ModelRepository(tmp_path).load("ts")
    x = torch.rand(5, *INPUT_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(x))


def test_a_named_feature_node_on_the_head_chain_is_used(files, tmp_path):
    card = import_model(
        files["torch-export"], tmp_path, ImportOptions(name="n", features="dropout")
    )
    assert card.config["features"] == "dropout"
    assert card.config["features_how"] == "named by --features"
    loaded = ModelRepository(tmp_path).load("n")
    assert loaded.module.embed(torch.rand(3, *INPUT_SHAPE)).shape == (3, 32)


def test_fit_refuses_too_few_images_and_foreign_class_folders(files, labels, images, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(_import_args(files["onnx"], "user-net", repo, labels)) == 0
    few = tmp_path / "few"
    for folder in sorted(images.iterdir()):
        (few / folder.name).mkdir(parents=True)
        for png in sorted(folder.iterdir())[:3]:
            (few / folder.name / png.name).write_bytes(png.read_bytes())
    from models.data.labelled import read_labelled_images

    card = ModelRepository(repo).card("user-net")
    with pytest.raises(DataError, match="too few images for class"):
        read_labelled_images(few, card.class_names, card.input_shape)
    (few / "Zebra").mkdir()
    (few / "Zebra" / "z.png").write_bytes(next((few / "Bag").iterdir()).read_bytes())
    with pytest.raises(DataError, match=r"class folders \['Zebra'\]"):
        read_labelled_images(few, card.class_names, card.input_shape)
    before = _snapshot(repo)
    assert main(["fit", "user-net", "--data", str(few), "--repo", str(repo)]) == 2
    assert _snapshot(repo) == before


def test_fit_data_may_be_the_readers_tarball(files, labels, images, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(_import_args(files["onnx"], "user-net", repo, labels)) == 0
    card = ModelRepository(repo).card("user-net")
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for folder in sorted(images.iterdir()):
            for png in sorted(folder.iterdir())[:12]:
                tar.add(png, arcname=f"mine/train/{folder.name}/{png.name}")
    from models.data.labelled import read_labelled_images

    data = read_labelled_images(archive, card.class_names, card.input_shape)
    assert len(data) == 120 and data.class_counts() == [12] * 10
    assert data.shape == INPUT_SHAPE and data.class_names == card.class_names
    folder = read_labelled_images(images, card.class_names, card.input_shape)
    first = sorted((images / card.class_names[0]).iterdir())[0]
    assert torch.equal(data.x[0], folder.x[0]) and first.suffix == ".png"


def test_an_onnx_exported_with_a_fixed_batch_size_serves_any_batch(net, tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        net, (torch.rand(1, *INPUT_SHAPE),), str(path), input_names=["input"], dynamo=False
    )  # batch axis fixed at 1, as many exporters leave it
    card = import_model(path, tmp_path, ImportOptions(name="fixed"))
    assert card.config["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    loaded = ModelRepository(tmp_path).load("fixed")
    x = torch.rand(7, *INPUT_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(x), atol=1e-5, rtol=1e-5)


def test_an_imported_onnx_graph_has_blocks_the_blocks_view_fits(net, files, held_out, tmp_path):
    options = ImportOptions(name="blocky", mean=(MEAN,), std=(STD,), input_shape=INPUT_SHAPE)
    import_model(files["onnx"], tmp_path, options)
    module = ModelRepository(tmp_path).load("blocky").module
    x = held_out.float()
    blocks = block_features(module, x[:16])
    # SmallBNNet's resolution ends: ReLU at 28 x 28, ReLU at 14 x 14, the last pool at 7 x 7.
    f = net.features
    with torch.no_grad():
        first = f[:3]((x[:16] - MEAN) / STD)
        second = f[3:7](first)
        expected = [t.mean(dim=(2, 3)) for t in (first, second, f[7](second))]
    assert len(blocks) == 3
    for got, want in zip(blocks, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    engine = GradientEngine(module, EngineOptions(blocks=True, strategy="batched"))
    fit = view_inputs(engine(x[:300]))
    view = BlocksView().fit_features(fit.take(fit.predicted == held_out.y[:300].numpy()))
    clean = view.predict_features(view_inputs(engine(x[300:])))
    noise = view.predict_features(view_inputs(engine(torch.rand(50, *INPUT_SHAPE))))
    assert auroc(clean, noise) > 0.95
