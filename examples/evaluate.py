"""Evaluate a MeSa checkpoint on a depth dataset under a named protocol (same as `mesa-hf evaluate`).

Example (NYUv2 protocol, Eigen crop, 1e-3..10 m, with MIM-Depth's flip and sliding-window TTA):

    python examples/evaluate.py path/to/checkpoint --data ../shared/data/nyu_test10 --protocol nyuv2 \
        --flip --sliding-window --output-json results/nyu.json --write-model-card

Run `python examples/evaluate.py --help` for all options.
"""

import sys

from mesa_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
