import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.modeling_outputs import DepthEstimatorOutput

from mesa_hf import MeSaConfig, MeSaImageProcessor

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _rgb(height=48, width=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_resize_keeps_aspect_to_multiples_of_32():
    processor = MeSaImageProcessor()
    assert processor(Image.fromarray(_rgb(480, 640)), return_tensors="pt").pixel_values.shape == (1, 3, 480, 640)
    # 400x500: scale closest to 1 keeps the image near its size, rounded to multiples of 32
    out = processor(Image.fromarray(_rgb(400, 500)), return_tensors="pt").pixel_values
    assert out.shape[-2] % 32 == 0 and out.shape[-1] % 32 == 0
    assert abs(out.shape[-1] / out.shape[-2] - 500 / 400) < 0.1
    small = MeSaImageProcessor(size={"height": 64, "width": 64})
    assert small(Image.fromarray(_rgb(50, 80)), return_tensors="pt").pixel_values.shape == (1, 3, 32, 64)


def test_rescale_and_imagenet_normalisation():
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    processor = MeSaImageProcessor(size={"height": 64, "width": 64})
    pixel_values = processor(image, return_tensors="pt").pixel_values[0]
    expected = (128 / 255 - MEAN) / STD
    np.testing.assert_allclose(pixel_values.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_modes_rgba_gray_16bit_give_the_same_rgb():
    processor = MeSaImageProcessor(size={"height": 64, "width": 64})
    gray8 = np.random.default_rng(1).integers(0, 256, size=(64, 64), dtype=np.uint8)
    reference = processor(np.repeat(gray8[..., None], 3, axis=-1), return_tensors="pt").pixel_values
    variants = {
        "L": Image.fromarray(gray8, mode="L"),
        "RGBA opaque": Image.fromarray(np.dstack([gray8] * 3 + [np.full_like(gray8, 255)]), mode="RGBA"),
        "I;16": Image.fromarray(gray8.astype(np.uint16) * 257),
        "uint16 array": gray8.astype(np.uint16) * 257,
        "float array": gray8.astype(np.float32) / 255,
        "CHW tensor": torch.from_numpy(np.repeat(gray8[None], 3, axis=0)),
    }
    for name, image in variants.items():
        out = processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=0, msg=name)


def test_exif_rotation_is_applied(tmp_path):
    pixels = _rgb(32, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the stored image must be rotated 90 degrees clockwise for display
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)
    processor = MeSaImageProcessor(do_resize=False)
    out = processor(str(path), return_tensors="pt").pixel_values
    upright = processor(np.ascontiguousarray(np.rot90(pixels, k=-1)), return_tensors="pt").pixel_values
    assert out.shape == (1, 3, 64, 32)
    torch.testing.assert_close(out, upright)


def test_bad_images_raise_clear_errors(tmp_path):
    processor = MeSaImageProcessor()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"broken\.png.*cannot be read"):
        processor(str(broken))
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        processor(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="empty"):
        processor(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        processor(np.zeros((10, 10, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        processor(np.zeros((10, 10, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected a file path, PIL image"):
        processor(12)
    with pytest.raises(ValueError, match="empty"):
        processor([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        processor(np.full((8, 8, 3), 2.5, dtype=np.float32))


def test_post_process_returns_metres_at_original_size():
    processor = MeSaImageProcessor()
    predicted = torch.rand(2, 32, 48) * 9 + 0.5
    outputs = DepthEstimatorOutput(predicted_depth=predicted)
    results = processor.post_process_depth_estimation(outputs, target_sizes=[(480, 640), (32, 48)])
    assert results[0]["predicted_depth"].shape == (480, 640)
    assert torch.equal(results[1]["predicted_depth"], predicted[1])
    # bilinear resizing stays inside the predicted range
    assert results[0]["predicted_depth"].min() >= predicted[0].min() - 1e-6
    assert results[0]["predicted_depth"].max() <= predicted[0].max() + 1e-6
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_depth_estimation(outputs, target_sizes=[(480, 640)])


def test_processor_round_trip_and_auto_class(tmp_path):
    processor = MeSaImageProcessor(size={"height": 256, "width": 320})
    processor.save_pretrained(tmp_path)
    MeSaConfig.from_preset("test").save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MeSaImageProcessor
    assert loaded.size == processor.size and loaded.ensure_multiple_of == 32 and loaded.keep_aspect_ratio


def test_batch_of_different_sizes_is_padded_and_each_depth_map_comes_back_at_its_own_size():
    from .helpers import tiny_depth_model

    processor = MeSaImageProcessor()
    landscape, panorama = _rgb(480, 640, seed=1), _rgb(300, 900, seed=2)
    inputs = processor([landscape, Image.fromarray(panorama)], return_tensors="pt")
    # 480x640 stays; 300x900 -> scale 640/900 (closest to 1) -> 213x640 -> multiples of 32: 224x640
    assert inputs["pixel_values"].shape == (2, 3, 480, 640)
    assert inputs["original_sizes"].tolist() == [[480, 640], [300, 900]]
    assert inputs["reshaped_input_sizes"].tolist() == [[480, 640], [224, 640]]
    alone = processor(panorama, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(inputs["pixel_values"][1, :, :224], alone, rtol=0, atol=0)
    assert inputs["pixel_values"][1, :, 224:].abs().max() == 0  # zeros after normalisation (the mean colour)

    model = tiny_depth_model(seed=0)
    with torch.no_grad():
        outputs = model(**inputs)
        alone_depth = model(pixel_values=alone[None]).predicted_depth[0]
    results = processor.post_process_depth_estimation(
        outputs, target_sizes=inputs["original_sizes"], reshaped_input_sizes=inputs["reshaped_input_sizes"]
    )
    assert [tuple(r["predicted_depth"].shape) for r in results] == [(480, 640), (300, 900)]
    # the un-padded image is untouched by its neighbour; the padded one is close to its prediction alone
    with torch.no_grad():
        first_alone = model(**processor(landscape, return_tensors="pt")).predicted_depth[0]
    torch.testing.assert_close(results[0]["predicted_depth"], first_alone, rtol=0, atol=1e-5)
    cropped = processor.post_process_depth_estimation(outputs, reshaped_input_sizes=inputs["reshaped_input_sizes"])
    assert cropped[1]["predicted_depth"].shape == (224, 640)
    relative = (cropped[1]["predicted_depth"] - alone_depth).abs() / alone_depth
    assert relative.median() < 0.01 and relative.max() < 0.5
    with pytest.raises(ValueError, match="reshaped input sizes"):
        processor.post_process_depth_estimation(outputs, reshaped_input_sizes=[(480, 640)])
    with pytest.raises(ValueError, match="exceeds its predicted depth map"):
        processor.post_process_depth_estimation(outputs, reshaped_input_sizes=[(480, 640), (500, 640)])


def test_batch_of_same_size_images_equals_each_image_alone():
    from .helpers import tiny_depth_model

    processor = MeSaImageProcessor(size={"height": 96, "width": 128})
    images = [_rgb(96, 128, seed=s) for s in range(3)]
    batch = processor(images, return_tensors="pt")
    model = tiny_depth_model(seed=0)
    with torch.no_grad():
        batched = processor.post_process_depth_estimation(
            model(**batch), batch["original_sizes"], batch["reshaped_input_sizes"]
        )
        for index, image in enumerate(images):
            single = processor(image, return_tensors="pt")
            torch.testing.assert_close(single["pixel_values"][0], batch["pixel_values"][index], rtol=0, atol=0)
            alone = processor.post_process_depth_estimation(model(**single), single["original_sizes"])
            torch.testing.assert_close(
                batched[index]["predicted_depth"], alone[0]["predicted_depth"], rtol=0, atol=1e-5
            )
