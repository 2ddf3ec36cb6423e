#!/usr/bin/env bash
# The main job: every MeSa stage on the synthetic RGB-D world, then fine-tuning, evaluation on held-out scenes
# next to the "average training depth map" baseline, and a depth picture of a real photo through
# pipeline("depth-estimation"). About 5-10 minutes on 2 CPU cores; no network, no downloads. It ends with the
# result table, the total time and the paths written, and writes OUTPUT_DIR/summary.json.
#
#   examples/main_job.sh [OUTPUT_DIR] [EXTRA FLAGS FOR BOTH SCRIPTS...]
#   (default: outputs/main-job; PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/main-job}"
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_DATASETS_CACHE="${HF_DATASETS_CACHE:-$OUT/datasets-cache}"
LAUNCH=("$PYTHON" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no
        --dynamo_backend no)
STARTED="$(date +%s)"

PHOTO="../shared/data/nyu_test10/image_0.png"
[ -f "$PHOTO" ] || PHOTO="synthetic"

"${LAUNCH[@]}" examples/pretrain.py --objective all --output_dir "$OUT/pretrain" --no_print_summary "${@:2}"
"${LAUNCH[@]}" examples/finetune.py --model_name_or_path "$OUT/pretrain/supervised" \
    --output_dir "$OUT/finetuned" --depth_picture "$PHOTO" --no_print_summary "${@:2}"
"$PYTHON" -m mesa_hf.training.summary "$OUT" --started "$STARTED"
