"""The mesa-hf web demo as a Hugging Face Space `app.py` (or run it locally: `python examples/app.py`).

A Gradio Space runs `python app.py`; put this file there as `app.py` with a `requirements.txt` holding
`mesa-hf[demo]` (or a `git+https://...` line for this repository), and choose the checkpoint with the Space
variable `MESA_HF_CHECKPOINT` (a Hub id such as `your-name/mesa-nyuv2`, or a folder in the Space). Without it, the
main job's `outputs/main-job/finetuned` is served (`make demo` writes it). Spaces set `GRADIO_SERVER_NAME=0.0.0.0`;
elsewhere the app binds 127.0.0.1.
"""

from __future__ import annotations

import os

from mesa_hf.demo import build_demo, launch_demo

demo = build_demo(os.environ.get("MESA_HF_CHECKPOINT"))

if __name__ == "__main__":
    launch_demo(
        demo,
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
