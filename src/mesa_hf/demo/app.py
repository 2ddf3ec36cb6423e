"""The Gradio page of the web demo: an Image tab, a 3-D tab, a Measure tab (and a Video tab where video support
exists).

Offline and safe by default: analytics off, binds 127.0.0.1, no ``share``, fonts and the 3-D viewer come from
Gradio's own server, uploads are size-limited, unreadable files are answered with a message in the page, and all
model runs share one queue with a concurrency limit. Every event has an ``api_name`` (drive it with
``gradio_client``): ``/predict``, ``/colorize``, ``/point_cloud``, ``/measure`` (and ``/predict_video``,
:mod:`.video_tab`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # parts of Gradio read only the variable
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:
    import gradio as gr
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError('the web demo needs Gradio: pip install "mesa-hf[demo]"') from error

from mesa_hf.camera import CameraIntrinsics, Measurement

from .engine import COLORMAPS, DemoEngine, DemoLimits, DepthResult, UnreadableImageError, get_engine, resolve_checkpoint

MODEL_CONCURRENCY_ID = "mesa-hf-model"
"""Queue slot group shared by every event that runs the model (image, video), so ``concurrency_limit`` bounds
them together."""

VIDEO_TAB_MODULE = "mesa_hf.demo.video_tab"
"""Where the Video tab lives once video support has landed (issue 12, point 4). That module defines
``build_video_tab(engine: DemoEngine) -> None``, which creates the tab's components and events inside the open
``gr.Tab("Video")`` (model events with ``concurrency_id=MODEL_CONCURRENCY_ID``), importing the video reading and
writing code itself. While the module is absent, or its dependencies (a video decoder) are missing, the tab is
left out; it is never shown empty."""

RANGE_AUTO = "automatic (percentiles)"
RANGE_FIXED = "fixed min / max"
INTRINSICS_DEFAULT = "as mesa-hf predict (EXIF, else checkpoint, else NYUv2 Kinect)"
INTRINSICS_PIXELS = "fx fy cx cy (pixels)"
INTRINSICS_FOV = "field of view"
MEASURE_ON_PHOTO = "photo"
MEASURE_ON_DEPTH = "depth"
MARKER_COLOURS = {"A": (0, 229, 255), "B": (255, 214, 0)}


def load_video_tab_builder() -> Callable[[DemoEngine], None] | None:
    """``build_video_tab`` from :data:`VIDEO_TAB_MODULE`, or None where that module or what it needs is missing."""
    try:
        if importlib.util.find_spec(VIDEO_TAB_MODULE) is None:
            return None
        return importlib.import_module(VIDEO_TAB_MODULE).build_video_tab
    except ModuleNotFoundError as error:
        print(f"mesa-hf demo: no Video tab ({error}); install a video decoder to get it")
        return None


def example_images(folder: str | Path, count: int = 2, height: int = 480, width: int = 640) -> list[str]:
    """Render ``count`` synthetic-world rooms (no files or network needed) as PNG examples in ``folder``."""
    from PIL import Image

    from mesa_hf.data.synthetic import synthetic_view

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"synthetic_room_{index}.png"
        if not path.is_file():
            image = synthetic_view(seed=7, index=4 * index, height=height, width=width)[0]
            partial = path.with_name(f".{path.stem}.{os.getpid()}.png")
            Image.fromarray(image).save(partial)
            os.replace(partial, path)  # atomic: several demo processes may share the folder
        paths.append(str(path))
    return paths


def _optional_number(value: Any) -> float | None:
    """None for an empty field, else the number (ValueError naming the value when it is not one)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None


def _page_error(error: Exception) -> gr.Error:
    return gr.Error(str(error).splitlines()[0] if str(error) else type(error).__name__)


def mark_points(picture: np.ndarray, points: dict[str, tuple[int, int]]) -> np.ndarray:
    """A copy of ``picture`` (H, W, 3) uint8 with each named pixel circled and labelled, joined by a line."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(picture[..., :3]))
    draw = ImageDraw.Draw(image)
    radius = max(4, round(max(image.size) / 80))
    if len(points) == 2:
        draw.line([tuple(p) for p in points.values()], fill=(255, 255, 255), width=max(1, radius // 3))
    for name, (u, v) in points.items():
        colour = MARKER_COLOURS[name]
        draw.ellipse([u - radius, v - radius, u + radius, v + radius], outline=colour, width=max(2, radius // 3))
        draw.point((u, v), fill=colour)
        draw.text((u + radius + 2, v - 2 * radius), name, fill=colour)
    return np.asarray(image)


def measure_readout(
    camera: CameraIntrinsics, measurement: Measurement | None, first: tuple[int, int] | None, first_depth: float | None
) -> str:
    """Markdown for the Measure tab: the distance (m), each point's pixel, depth and camera-frame position, and
    the intrinsics used with their source."""
    lines = []
    if measurement is not None:
        lines.append(f"**distance A-B: {measurement.distance:.4f} m**")
        for name, (u, v), z, point in zip(
            "AB", measurement.pixels, measurement.depths, measurement.points, strict=True
        ):
            x, y, _ = point
            lines.append(f"**{name}** pixel ({u}, {v}) · depth {z:.4f} m · point ({x:.4f}, {y:.4f}, {z:.4f}) m")
    elif first is not None:
        lines.append(f"**A** pixel ({first[0]}, {first[1]}) · depth {first_depth:.4f} m. Click a second point (B).")
    else:
        lines.append("Click two points on the picture (A, then B).")
    lines.append(
        f"**intrinsics** {camera.describe()} at {camera.width}x{camera.height} px (the depth map's size) · "
        f"**source: {camera.source}** (change them on the 3-D tab)"
    )
    return "  \n".join(lines)


def build_demo(
    checkpoint: str | Path | DemoEngine | None = None,
    *,
    device: str | None = None,
    dtype: str = "fp32",
    limits: DemoLimits | None = None,
    examples: Sequence[str | Path] | None = None,
) -> gr.Blocks:
    """The demo page for ``checkpoint`` (folder, Hub id, a loaded :class:`DemoEngine`, or None for the main
    job's ``outputs/main-job/finetuned``). The model loads once per process (:func:`get_engine`).

    ``examples``: image files offered under the upload (default: two rendered synthetic rooms).
    The returned Blocks carries the engine as ``demo.mesa_engine``; start it with :func:`launch_demo`.
    """
    if isinstance(checkpoint, DemoEngine):
        engine = checkpoint
    else:
        engine = get_engine(resolve_checkpoint(checkpoint), device=device, dtype=dtype, limits=limits or DemoLimits())
    limits = engine.limits
    if examples is None:
        examples = example_images(engine.output_root.parent / "mesa-hf-demo-examples")

    with gr.Blocks(title="MeSa depth", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        result_state = gr.State(None)  # the session's last DepthResult
        gr.Markdown(
            "## MeSa monocular depth\n"
            f"{engine.description} · {engine.device_name}  \n"
            "Depth in metres. Everything runs on this machine; nothing is sent anywhere."
        )
        with gr.Tabs():
            with gr.Tab("Image", id="image"), gr.Row():
                with gr.Column(scale=1):
                    image_input = gr.Image(
                        label="Photo (upload, paste or webcam)",
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard", "webcam"],
                        elem_id="photo",
                    )
                    if examples:
                        gr.Examples(examples=[[str(p)] for p in examples], inputs=[image_input], label="Examples")
                    flip = gr.Checkbox(label="Flip test-time augmentation (2 passes)", value=False)
                    run_button = gr.Button("Estimate depth", variant="primary", elem_id="run")
                    cmap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label="Colour map")
                    range_mode = gr.Radio([RANGE_AUTO, RANGE_FIXED], value=RANGE_AUTO, label="Depth range")
                    with gr.Row():
                        vmin = gr.Number(label="min (m)", value=0.5, minimum=0)
                        vmax = gr.Number(label="max (m)", value=10.0, minimum=0)
                with gr.Column(scale=2):
                    slider = gr.ImageSlider(
                        label="Photo | depth", type="numpy", format="webp", interactive=False, elem_id="slider"
                    )
                    readout = gr.Markdown(elem_id="readout")
                    with gr.Row():
                        png16_button = gr.DownloadButton(
                            "16-bit PNG (1 unit = 1 mm)", interactive=False, elem_id="download-png16"
                        )
                        npy_button = gr.DownloadButton("float32 .npy (m)", interactive=False, elem_id="download-npy")
                        ply_button = gr.DownloadButton("point cloud .ply", interactive=False, elem_id="download-ply")
                        glb_button = gr.DownloadButton("mesh .glb", interactive=False, elem_id="download-glb")
            with gr.Tab("3-D", id="3d"), gr.Row():
                with gr.Column(scale=1):
                    intrinsics_mode = gr.Radio(
                        [INTRINSICS_DEFAULT, INTRINSICS_PIXELS, INTRINSICS_FOV],
                        value=INTRINSICS_DEFAULT,
                        label="Camera intrinsics (pixels of the uploaded photo)",
                    )
                    with gr.Row():
                        fx = gr.Number(label="fx", value=None)
                        fy = gr.Number(label="fy", value=None)
                    with gr.Row():
                        cx = gr.Number(label="cx", value=None)
                        cy = gr.Number(label="cy", value=None)
                    fov = gr.Number(label="horizontal field of view (degrees)", value=60.0, minimum=1, maximum=179)
                    max_points = gr.Slider(
                        5_000,
                        limits.max_points,
                        value=limits.default_points,
                        step=5_000,
                        label="maximum points (every k-th pixel)",
                    )
                    cloud_button = gr.Button("Update point cloud", elem_id="update-cloud")
                    cloud_readout = gr.Markdown(elem_id="cloud-readout")
                with gr.Column(scale=2):
                    viewer = gr.Model3D(
                        label="Point cloud (metres; seen from behind the camera)",
                        display_mode="point_cloud",
                        clear_color=(0.08, 0.08, 0.1, 1.0),
                        camera_position=(90, 90, None),  # photo upright (the viewer's copy is y-up)
                        height=520,
                        elem_id="viewer",
                    )
            with gr.Tab("Measure", id="measure"), gr.Row():
                with gr.Column(scale=2):
                    measure_on = gr.Radio(
                        [MEASURE_ON_PHOTO, MEASURE_ON_DEPTH], value=MEASURE_ON_PHOTO, label="Click on the"
                    )
                    measure_image = gr.Image(
                        label="Click two points (A, then B); a third click starts again",
                        type="numpy",
                        format="png",
                        interactive=False,
                        buttons=[],
                        elem_id="measure-image",
                    )
                with gr.Column(scale=1):
                    with gr.Row():
                        point_a_u = gr.Number(label="A: column u (px)", precision=0, elem_id="measure-a-u")
                        point_a_v = gr.Number(label="A: row v (px)", precision=0, elem_id="measure-a-v")
                    with gr.Row():
                        point_b_u = gr.Number(label="B: column u (px)", precision=0, elem_id="measure-b-u")
                        point_b_v = gr.Number(label="B: row v (px)", precision=0, elem_id="measure-b-v")
                    measure_button = gr.Button("Measure", elem_id="measure")
                    measure_text = gr.Markdown(elem_id="measure-readout")
                    camera_button = gr.DownloadButton("camera .json", interactive=False, elem_id="download-camera")
            video_tab = load_video_tab_builder()
            if video_tab is not None:
                with gr.Tab("Video", id="video"):
                    video_tab(engine)

        def colorize(result: DepthResult, cmap_name: str, mode: str, low: Any, high: Any):
            fixed = mode == RANGE_FIXED
            try:
                colors, used = engine.colorize(
                    result, cmap_name, *((_optional_number(low), _optional_number(high)) if fixed else (None, None))
                )
            except ValueError as error:
                raise _page_error(error) from error
            # the upload itself is shown as the photo (no re-encoding) unless it was downscaled
            photo = result.source if result.source and not result.downscaled and Path(result.source).is_file() else None
            return (photo or np.asarray(result.image), colors), engine.readout(result, used, fixed)

        def predict(upload: dict | None, use_flip: Any, cmap_name: str, mode: str, low: Any, high: Any):
            # Runs with preprocess=False: Gradio has checked that the file lies in its upload folder, and the file
            # is read here so that a non-image or broken file gets a message in the page (UnreadableImageError)
            # rather than failing inside gr.Image's own preprocessing.
            path = (upload or {}).get("path")
            if not path:
                raise gr.Error("upload a photo first")
            name = Path((upload or {}).get("orig_name") or path).name
            try:
                result = engine.predict_file(path, flip=bool(use_flip), name=name)
            except UnreadableImageError as error:
                raise _page_error(error) from error
            pair, text = colorize(result, cmap_name, mode, low, high)
            files = engine.write_downloads(result)
            default = engine.default_intrinsics(result)
            return (
                pair,
                text,
                gr.DownloadButton(value=str(files["png16"]), interactive=True),
                gr.DownloadButton(value=str(files["npy"]), interactive=True),
                result,
                round(default.fx, 3),
                round(default.fy, 3),
                round(default.cx, 3),
                round(default.cy, 3),
            )

        def chosen_intrinsics(result: DepthResult, mode: str, *values: Any) -> CameraIntrinsics | None:
            """The 3-D tab's choice in pixels of the upload (None: the default resolver)."""
            *pinhole, field_of_view = values
            if mode == INTRINSICS_PIXELS:
                numbers = [_optional_number(v) for v in pinhole]
                if None in numbers:
                    raise ValueError("give all four of fx, fy, cx, cy (pixels), or choose another intrinsics mode")
                return CameraIntrinsics(*numbers, source="given")
            if mode == INTRINSICS_FOV:
                width, height = result.upload_size
                return engine.intrinsics_from_fov(width, height, float(field_of_view))
            return None

        def point_cloud(result: DepthResult | None, mode: str, *values: Any):
            if result is None:
                raise gr.Error("estimate depth on the Image tab first")
            *camera_values, points_wanted = values
            try:
                intrinsics = chosen_intrinsics(result, mode, *camera_values)
                cloud = engine.write_point_cloud(result, intrinsics, int(points_wanted))
            except ValueError as error:
                raise _page_error(error) from error
            text = (
                f"**{cloud.points:,} points** (every {cloud.stride}. pixel in each direction; "
                f"{cloud.flying_pixels_dropped:,} flying pixels at depth edges left out)  \n"
                f"**intrinsics** {cloud.intrinsics.describe()}"
                + (f"  \nno .glb: {cloud.glb_missing}" if cloud.glb_missing else "")
            )
            glb = (
                gr.DownloadButton(value=str(cloud.glb_path), interactive=True)
                if cloud.glb_path
                else gr.DownloadButton(value=None, interactive=False)
            )
            return str(cloud.view_path), gr.DownloadButton(value=str(cloud.path), interactive=True), text, glb

        def measure(result: DepthResult | None, on: str, a_u: Any, a_v: Any, b_u: Any, b_v: Any, *camera_values):
            """The Measure tab: the picture with the points marked, the readout and the camera JSON download."""
            if result is None:
                raise gr.Error("estimate depth on the Image tab first")
            try:
                intrinsics = chosen_intrinsics(result, *camera_values)  # pixels of the upload
                camera = engine.processed_intrinsics(result, intrinsics)  # pixels of the depth map
                first = [_optional_number(a_u), _optional_number(a_v)]
                second = [_optional_number(b_u), _optional_number(b_v)]
                measurement = first_depth = None
                if None not in first and None not in second:
                    measurement = engine.measure(result, first, second, intrinsics)
                    marks = dict(zip("AB", measurement.pixels, strict=True))
                elif None not in first:
                    single = engine.measure(result, first, first, intrinsics)
                    marks, first_depth = {"A": single.pixels[0]}, single.depths[0]
                else:
                    marks = {}
                camera_json = engine.write_camera_json(result, intrinsics)
            except ValueError as error:
                raise _page_error(error) from error
            if on == MEASURE_ON_DEPTH:
                picture = engine.colorize(result)[0]
            else:
                picture = np.asarray(result.image.convert("RGB"))
            text = measure_readout(camera, measurement, marks.get("A"), first_depth)
            return mark_points(picture, marks), text, gr.DownloadButton(value=str(camera_json), interactive=True)

        def measure_click(
            result: DepthResult | None,
            on: str,
            a_u: Any,
            a_v: Any,
            b_u: Any,
            b_v: Any,
            mode: str,
            fx_value: Any,
            fy_value: Any,
            cx_value: Any,
            cy_value: Any,
            fov_value: Any,
            event: gr.SelectData,
        ) -> tuple:
            """A click on the picture (``event.index``: its pixel (u, v)): it becomes A when none or both points are
            set, else B."""
            camera_values = (mode, fx_value, fy_value, cx_value, cy_value, fov_value)
            u, v = (int(c) for c in event.index)
            if a_u is None or a_v is None or (b_u is not None and b_v is not None):
                a_u, a_v, b_u, b_v = u, v, None, None
            else:
                b_u, b_v = u, v
            return (a_u, a_v, b_u, b_v, *measure(result, on, a_u, a_v, b_u, b_v, *camera_values))

        def measure_reset(result: DepthResult | None, on: str, *camera_values: Any) -> tuple:
            return (None, None, None, None, *measure(result, on, None, None, None, None, *camera_values))

        color_inputs = [cmap, range_mode, vmin, vmax]
        cloud_inputs = [result_state, intrinsics_mode, fx, fy, cx, cy, fov, max_points]
        cloud_outputs = [viewer, ply_button, cloud_readout, glb_button]
        camera_inputs = [intrinsics_mode, fx, fy, cx, cy, fov]
        points = [point_a_u, point_a_v, point_b_u, point_b_v]
        measure_outputs = [measure_image, measure_text, camera_button]
        predicted = gr.on(
            [run_button.click, image_input.upload],
            predict,
            inputs=[image_input, flip, *color_inputs],
            outputs=[slider, readout, png16_button, npy_button, result_state, fx, fy, cx, cy],
            api_name="predict",
            preprocess=False,
            concurrency_id=MODEL_CONCURRENCY_ID,
            concurrency_limit=limits.concurrency_limit,
        )
        predicted.success(
            point_cloud,
            inputs=cloud_inputs,
            outputs=cloud_outputs,
            api_name="point_cloud_of_prediction",
            api_visibility="undocumented",
        )
        predicted.success(
            measure_reset,
            inputs=[result_state, measure_on, *camera_inputs],
            outputs=[*points, *measure_outputs],
            api_name="measure_of_prediction",
            api_visibility="undocumented",
        )
        gr.on(
            [cmap.change, range_mode.change, vmin.submit, vmax.submit],
            lambda result, *args: colorize(result, *args) if result is not None else (None, ""),
            inputs=[result_state, *color_inputs],
            outputs=[slider, readout],
            api_name="colorize",
        )
        gr.on(
            [cloud_button.click, max_points.release, intrinsics_mode.change],
            point_cloud,
            inputs=cloud_inputs,
            outputs=cloud_outputs,
            api_name="point_cloud",
        )
        gr.on(
            [measure_button.click, measure_on.change],
            measure,
            inputs=[result_state, measure_on, *points, *camera_inputs],
            outputs=measure_outputs,
            api_name="measure",
        )
        measure_image.select(
            measure_click,
            inputs=[result_state, measure_on, *points, *camera_inputs],
            outputs=[*points, *measure_outputs],
            api_name="measure_click",
            api_visibility="undocumented",
        )

    demo.queue(default_concurrency_limit=limits.concurrency_limit, max_size=limits.max_queue_size)
    demo.mesa_engine = engine
    return demo


def launch_demo(
    demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, *, prevent_thread_lock: bool = False, **kwargs
) -> Any:
    """Serve ``demo`` on ``host:port`` (127.0.0.1 by default; never shared): no SSR, analytics off, uploads
    limited to the engine's ``max_upload_size``. Extra keyword arguments go to ``Blocks.launch``."""
    engine: DemoEngine | None = getattr(demo, "mesa_engine", None)
    max_file_size = engine.limits.max_upload_size if engine else DemoLimits().max_upload_size
    options: dict[str, Any] = {
        "server_name": host,
        "server_port": port,
        "share": False,
        "ssr_mode": False,
        "max_file_size": max_file_size,
        "show_error": False,
        "inbrowser": False,
        "prevent_thread_lock": prevent_thread_lock,
        "quiet": prevent_thread_lock,
    }
    options.update(kwargs)
    return demo.launch(**options)
