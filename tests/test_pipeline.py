import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mesa_hf import MeSaImageProcessor, save_for_sharing

from .helpers import check_pipeline_on_photo, tiny_depth_model
from .rgbd_fixtures import write_photo


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A generated 480x640 indoor photo (a render of the synthetic world), PNG."""
    return write_photo(tmp_path_factory.mktemp("photo") / "room.png", 480, 640, seed=3)


def test_pipeline_on_a_photo(tmp_path, photo):
    tiny_depth_model().save_pretrained(tmp_path)
    MeSaImageProcessor().save_pretrained(tmp_path)
    check_pipeline_on_photo(tmp_path, photo)


def test_shared_checkpoint_loads_without_mesa_hf(tmp_path, photo):
    model = tiny_depth_model()
    folder = save_for_sharing(model, MeSaImageProcessor(), tmp_path / "shared-checkpoint")
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_mesa.py", "camera.py"} <= names
    assert not any(name.startswith(".") for name in os.listdir(tmp_path)), "temporary folders left behind"
    processor = MeSaImageProcessor()
    with torch.no_grad():
        expected = model(**processor(str(photo), return_tensors="pt")).predicted_depth

    output = tmp_path / "remote.pt"
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mesa_hf"] = None  # mesa_hf cannot be imported in this process
        try:
            import mesa_hf
        except ImportError:
            pass
        else:
            raise SystemExit("mesa_hf was importable")
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation, pipeline
        model = AutoModelForDepthEstimation.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        with torch.no_grad():
            outputs = model(**processor({str(photo)!r}, return_tensors="pt"))
            depth = outputs.predicted_depth
        camera = processor.post_process_depth_estimation(outputs, [(240, 320)], return_intrinsics=True)[0]
        assert camera["intrinsics_source"] == "assumed" and camera["intrinsics"].shape == (3, 3), camera
        estimator = pipeline("depth-estimation", model={str(folder)!r}, trust_remote_code=True, device="cpu")
        result = estimator({str(photo)!r})
        torch.save({{"depth": depth, "pipeline": result["predicted_depth"]}}, {str(output)!r})
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = torch.load(output)
    assert torch.equal(remote["depth"], expected)
    assert remote["pipeline"].shape == (480, 640)
