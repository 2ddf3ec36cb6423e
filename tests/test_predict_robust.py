"""`mesa-hf predict` on batches with unreadable files: every readable image is written, every bad one named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.cli import main
from mesa_hf.evaluation.predict import UnreadableImageError, collect_inputs, predict_to_files

from .helpers import tiny_depth_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-mesa"
    tiny_depth_model(seed=0).save_pretrained(path)
    MeSaImageProcessor(size={"height": 64, "width": 96}).save_pretrained(path)
    return path


def _photo(height: int, width: int, seed: int) -> Image.Image:
    """A smooth random colour image (noise upsampled), so JPEG encodes it into many bytes."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """good_0.png, good_1.jpg, good_2.png (64x96) around a corrupt PNG and a JPEG cut in half."""
    folder = tmp_path / "images"
    folder.mkdir()
    _photo(64, 96, 0).save(folder / "a_good.png")
    _photo(64, 96, 1).save(folder / "b_good.jpg", quality=95)
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # PNG signature, garbage after
    _photo(64, 96, 2).save(folder / "d_truncated.jpg", quality=95)
    whole = (folder / "d_truncated.jpg").read_bytes()
    (folder / "d_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    _photo(64, 96, 3).save(folder / "e_good.png")
    return folder


GOOD = ["a_good", "b_good", "e_good"]
BAD = ["c_corrupt.png", "d_truncated.jpg"]


def test_predict_skips_bad_files_writes_the_rest_and_exits_non_zero(checkpoint, mixed_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    status = main(
        ["predict", str(mixed_folder), "--checkpoint", str(checkpoint), "--output-dir", str(out)]
        + ["--batch-size", "2", "--no-progress", "--outputs", "npy", "png16"]
    )
    captured = capsys.readouterr()
    assert status == 1
    warnings = [
        line
        for line in captured.err.splitlines()
        if "warning: cannot read image" in line and line.endswith("(skipped)")
    ]
    assert len(warnings) == 2
    assert "c_corrupt.png" in warnings[0] and "cannot identify image file" in warnings[0]
    assert "d_truncated.jpg" in warnings[1] and "truncated" in warnings[1]
    summary = captured.err.split("mesa-hf predict: 2 of 5 inputs failed:")[1].splitlines()[1:]
    assert [next(b for b in BAD if b in line) for line in summary] == BAD
    assert "predicted 3 images" in captured.out
    for name in GOOD:
        depth = np.load(out / f"{name}_depth.npy")
        assert depth.shape == (64, 96) and np.isfinite(depth).all() and depth.std() > 1e-4
        assert (out / f"{name}_depth.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}_depth.npy" for n in GOOD] + [f"{n}_depth.png" for n in GOOD] + ["predictions.json"]
    )
    assert [r["name"] for r in json.loads((out / "predictions.json").read_text())] == GOOD


def test_skipping_does_not_change_the_good_predictions(checkpoint, mixed_folder, tmp_path):
    """The good images give the same depth whether or not bad files share their batches."""
    alone = tmp_path / "alone"
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in GOOD:
        source = next(mixed_folder.glob(f"{name}.*"))
        (clean / source.name).write_bytes(source.read_bytes())
    assert main(["predict", str(clean), "--checkpoint", str(checkpoint), "--output-dir", str(alone)] + [
        "--batch-size", "2", "--no-progress", "--outputs", "npy"]) == 0  # fmt: skip
    mixed = tmp_path / "mixed"
    assert main(["predict", str(mixed_folder), "--checkpoint", str(checkpoint), "--output-dir", str(mixed)] + [
        "--batch-size", "2", "--no-progress", "--outputs", "npy"]) == 1  # fmt: skip
    for name in GOOD:
        np.testing.assert_array_equal(np.load(alone / f"{name}_depth.npy"), np.load(mixed / f"{name}_depth.npy"))


def test_strict_stops_at_the_first_bad_file(checkpoint, mixed_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    status = main(
        ["predict", str(mixed_folder), "--checkpoint", str(checkpoint), "--output-dir", str(out), "--strict"]
        + ["--batch-size", "1", "--no-progress", "--outputs", "npy"]
    )
    err = capsys.readouterr().err
    assert status == 2
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "error: cannot read image" in errors[0] and "c_corrupt.png" in errors[0]
    assert "Traceback" not in err
    # batch size 1: the two good images before the corrupt one are written, nothing after it
    assert sorted(p.name for p in out.iterdir()) == ["a_good_depth.npy", "b_good_depth.npy"]


def test_library_records_failures_and_list_entries_that_are_missing(checkpoint, mixed_folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{mixed_folder / 'a_good.png'}\nmissing.png\n{mixed_folder / 'c_corrupt.png'}\n")
    assert [f.name for f in collect_inputs([listing])] == ["a_good", "missing", "c_corrupt"]
    model = tiny_depth_model(seed=0)
    seen = []
    records = predict_to_files(
        model, [listing], tmp_path / "out", outputs=["npy"], progress=False, on_failure=seen.append
    )
    assert [r["name"] for r in records] == ["a_good"]
    assert seen == records.failures and [Path(f.source).name for f in seen] == ["missing.png", "c_corrupt.png"]
    assert "file not found" in seen[0].error and "cannot identify image file" in seen[1].error
    with pytest.raises(UnreadableImageError, match=r"missing\.png: file not found"):
        predict_to_files(model, [listing], tmp_path / "strict", outputs=["npy"], progress=False, strict=True)


def test_corrupt_animated_gif_is_a_failure_not_a_stop(checkpoint, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    _photo(64, 96, 0).save(folder / "a.png")
    (folder / "b.gif").write_bytes(b"GIF89a" + bytes(30))
    records = predict_to_files(tiny_depth_model(seed=0), [folder], tmp_path / "out", outputs=["npy"], progress=False)
    assert [r["name"] for r in records] == ["a"] and [Path(f.source).name for f in records.failures] == ["b.gif"]
