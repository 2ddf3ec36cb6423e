import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from PIL import Image
from transformers import pipeline

from mesa_hf import MeSaImageProcessor, save_for_sharing

from .helpers import tiny_depth_model


def test_pipeline_on_a_real_nyu_photo(tmp_path, shared_data):
    model = tiny_depth_model()
    model.save_pretrained(tmp_path)
    MeSaImageProcessor().save_pretrained(tmp_path)
    depth_estimator = pipeline("depth-estimation", model=str(tmp_path), device="cpu")
    photo = shared_data / "nyu_test10" / "image_0.png"
    result = depth_estimator(str(photo))
    depth = result["predicted_depth"]
    assert depth.shape == (480, 640) == Image.open(photo).size[::-1]
    assert torch.isfinite(depth).all()
    assert depth.min() > 0 and depth.max() <= model.config.max_depth
    assert isinstance(result["depth"], Image.Image) and result["depth"].size == (640, 480)
    assert np.asarray(result["depth"]).std() > 0
    # a list of inputs gives a list of results
    assert len(depth_estimator([str(photo), Image.open(photo)])) == 2


def test_shared_checkpoint_loads_without_mesa_hf(tmp_path, shared_data):
    model = tiny_depth_model()
    folder = save_for_sharing(model, MeSaImageProcessor(), tmp_path / "shared-checkpoint")
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_mesa.py"} <= names
    assert not any(name.startswith(".") for name in os.listdir(tmp_path)), "temporary folders left behind"
    photo = shared_data / "nyu_test10" / "image_1.png"
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
            depth = model(**processor({str(photo)!r}, return_tensors="pt")).predicted_depth
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
