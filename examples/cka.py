"""Layer-wise CKA between checkpoints (same as `mesa-hf cka`): how much each Swin-V2 block changes.

Example (pre-trained vs fine-tuned encoder on NYUv2 test images; one curve per pair, heatmap of all layer pairs):

    python examples/cka.py pretrained/ finetuned/ --images ../shared/data/nyu_test10 --output-dir results/cka

Writes results/cka/cka.csv (pair, layer_a, layer_b, cka) and results/cka/cka.png.
"""

import sys

from mesa_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["cka", *sys.argv[1:]]))
