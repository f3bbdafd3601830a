"""The commands that read a checkpoint, end to end on a run trained for one epoch on a tiny folder."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.cli import main
from simsiam.explore import read_embeddings

CLASSES = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, image folder): 3 classes x 6 images of 16 px, one epoch of resnet10-slim."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.asarray(colour) * rng.uniform(0.5, 1.0) + rng.normal(0, 20, (16, 16, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "images" / name / f"{i}.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMSIAM_CACHE", str(root / "cache"))
        args = [
            "train",
            str(root / "images"),
            "--out",
            str(root / "run"),
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--backbone",
            "resnet10-slim",
        ]
        args += ["--proj-dim", "32", "--knn-k", "5", "--held-out", "0.2", "--no-progress"]
        assert main(args) == 0
        yield root / "run", root / "images"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_prints_a_table_and_writes_json(run, capsys, tmp_path):
    folder, images = run
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        folder,
        "--train",
        images,
        "--test",
        images,
        "--knn-k",
        5,
        "--linear",
        "--linear-epochs",
        5,
        "--out",
        tmp_path / "e.json",
        "--no-progress",
    )
    assert code == 0 and "kNN top-1" in out and "linear top-1" in out
    result = json.loads((tmp_path / "e.json").read_text())
    assert 0 <= result["knn"]["top1"] <= 1 and 0 <= result["linear"]["top1"] <= 1 and result["backbone_unchanged"]
    assert result["train"]["images"] == 18 and result["knn"]["k"] == 5


def test_evaluate_reuses_cached_features(run, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    folder, images = run
    args = (
        "evaluate",
        folder / "checkpoints" / "last.ckpt",
        "--train",
        images,
        "--test",
        images,
        "--knn-k",
        5,
        "--cache-features",
        "--no-progress",
        "--out",
        tmp_path / "e.json",
    )
    assert run_cli(capsys, *args)[0] == 0
    first = json.loads((tmp_path / "e.json").read_text())
    cached = list((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(cached) == 1 and first["train"]["feature_cache"] == str(cached[0])  # train and test are one image set
    assert run_cli(capsys, *args)[0] == 0
    assert json.loads((tmp_path / "e.json").read_text())["knn"] == {
        **first["knn"],
        "seconds": pytest.approx(first["knn"]["seconds"], abs=10),
    }


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_embed_writes_one_row_per_image(run, capsys, tmp_path, suffix):
    folder, images = run
    out = tmp_path / f"emb{suffix}"
    assert run_cli(capsys, "embed", folder, images, "--out", out, "--no-progress")[0] == 0
    table = read_embeddings(out)
    assert table["embedding"].shape == (18, 256) and sorted(set(table["class"])) == sorted(CLASSES)
    assert table["metadata"]["backbone"] == "resnet10-slim"


def test_embed_unit_rows_and_projector_outputs_as_asked_and_recorded(run, capsys, tmp_path):
    folder, images = run
    out = tmp_path / "z.npz"
    code, said, _ = run_cli(capsys, "embed", folder, images, "--out", out, "--features", "projector", "--normalize", "--no-progress")
    assert code == 0 and "18 embeddings of 32 dimensions (projector features, unit length)" in said
    table = read_embeddings(out)
    norms = np.linalg.norm(table["embedding"], axis=1)
    assert table["embedding"].shape == (18, 32) and np.allclose(norms, 1, atol=1e-5)
    assert table["metadata"]["features"] == "projector" and table["metadata"]["normalized"] is True
    assert run_cli(capsys, "embed", folder, images, "--out", tmp_path / "b.npz", "--no-progress")[0] == 0
    plain = read_embeddings(tmp_path / "b.npz")
    assert plain["metadata"]["features"] == "backbone" and plain["metadata"]["normalized"] is False
    assert not np.allclose(np.linalg.norm(plain["embedding"], axis=1), 1, atol=1e-3)  # as before: not normalised unless asked


def is_png(path) -> bool:
    with Image.open(path) as img:
        return img.format == "PNG" and min(img.size) > 100


def test_neighbors_of_random_and_given_queries(run, capsys, tmp_path):
    folder, images = run
    code, out, _ = run_cli(capsys, "neighbors", folder, images, "--num-queries", 2, "--out", tmp_path / "n.png", "--no-progress")
    assert code == 0 and is_png(tmp_path / "n.png") and "2 queries x 8 neighbours" in out
    query = images / "red" / "0.png"
    code, out, _ = run_cli(capsys, "neighbors", folder, images, "--query", query, "--k", 3, "--out", tmp_path / "q.png", "--no-progress")
    assert code == 0 and is_png(tmp_path / "q.png") and "1 queries x 3 neighbours" in out


def test_map_draws_thumbnails(run, capsys, tmp_path):
    folder, images = run
    code, out, _ = run_cli(capsys, "map", folder, images, "--method", "pca", "--grid", 5, "--out", tmp_path / "m.png", "--no-progress")
    assert code == 0 and is_png(tmp_path / "m.png") and "PCA projection of 18 embeddings" in out


def test_export_both_formats(run, capsys, tmp_path):
    folder, _ = run
    code, out, _ = run_cli(capsys, "export", folder, "--format", "torchvision", "--out", tmp_path / "b.pt")
    assert code == 0 and "build_backbone('resnet10-slim', small_images=True)" in out
    assert set(torch.load(tmp_path / "b.pt")) == set(torch.load(folder / "backbone.pt"))
    pytest.importorskip("onnx")
    code, out, _ = run_cli(capsys, "export", folder, "--format", "onnx", "--out", tmp_path / "b.onnx")
    assert code == 0 and (tmp_path / "b.onnx").stat().st_size > 0


def test_export_safetensors_loads_without_pickle_strictly_into_the_network(run, capsys, tmp_path):
    from safetensors.torch import load_file

    folder, _ = run
    out_file = tmp_path / "backbone.safetensors"
    code, out, _ = run_cli(capsys, "export", folder, "--format", "safetensors", "--out", out_file)
    assert code == 0 and "safetensors.torch.load_file(" in out
    lines = out.split("load them with:\n", 1)[1].split("\ninputs:", 1)[0]
    scope: dict = {}
    exec("\n".join(line.strip() for line in lines.splitlines()), scope)  # the printed lines build the network and load it strictly
    weights = load_file(out_file)
    assert set(weights) == set(torch.load(folder / "backbone.pt")) and set(weights) == set(scope["net"].state_dict())
    assert json.loads((tmp_path / "backbone.safetensors.json").read_text())["format"] == "safetensors"


def test_export_onnx_dynamic_takes_other_image_sizes(run, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from simsiam import load_checkpoint

    folder, _ = run
    code, out, _ = run_cli(capsys, "export", folder, "--format", "onnx", "--dynamic", "--out", tmp_path / "d.onnx")
    assert code == 0 and "batch size, height and width are dynamic" in out
    assert "checked with onnxruntime at 16x16" in out and "checked with onnxruntime at 48x48" in out
    model, _ = load_checkpoint(folder)
    session = onnxruntime.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    for side in (24, 40):
        x = torch.randn(2, 3, side, side)
        (ours,) = session.run(["features"], {"images": x.numpy()})
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(ours), model.features(x), atol=1e-4)


def one_line_error(code, out, err, *names):
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("simsiam ")
    for name in names:
        assert str(name) in err


def test_bad_checkpoints_give_one_line_and_exit_2(run, capsys, tmp_path):
    folder, images = run
    missing = tmp_path / "nope.ckpt"
    one_line_error(*run_cli(capsys, "export", missing, "--format", "onnx"), missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    one_line_error(*run_cli(capsys, "embed", garbage, images, "--out", tmp_path / "e.npz"), garbage)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((folder / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    one_line_error(*run_cli(capsys, "map", truncated, images, "--out", tmp_path / "m.png"), truncated)
    one_line_error(*run_cli(capsys, "neighbors", folder / "backbone.pt", images, "--out", tmp_path / "n.png"), "backbone.pt", "run folder")
    one_line_error(*run_cli(capsys, "export", tmp_path, "--format", "torchvision"), tmp_path)
    assert not zipfile.is_zipfile(garbage)


def test_bad_options_and_data_give_one_line_and_exit_2(run, capsys, tmp_path):
    folder, images = run
    one_line_error(*run_cli(capsys, "embed", folder, images, "--out", tmp_path / "e.csv"), "--out", "e.csv")
    one_line_error(*run_cli(capsys, "evaluate", folder, "--train", images, "--test", tmp_path / "none", "--no-progress"), tmp_path / "none")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (16, 16)).save(flat / "a.png")
    one_line_error(*run_cli(capsys, "evaluate", folder, "--train", images, "--test", flat, "--no-progress"), flat, "labels")
    one_line_error(*run_cli(capsys, "evaluate", folder, "--train", images, "--test", images, "--knn-k", 0), "--knn-k")
    one_line_error(
        *run_cli(capsys, "neighbors", folder, images, "--query", tmp_path / "missing.png", "--no-progress"), "missing.png", "no such file"
    )
