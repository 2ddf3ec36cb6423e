"""Run by tests/test_fsdp.py on 2 processes (``torchrun --standalone --nproc_per_node 2 fsdp_shard_worker.py MODE``):
shards the test-preset `MeSaForDepthEstimation` with `mesa_hf.training.sharding.apply_fsdp` and prints one JSON line
per rank: the parameter elements this rank holds, the model's total, the number of FSDP units, and (rank 0) whether
the gathered full state dict equals the weights before sharding."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from mesa_hf import MeSaConfig, MeSaForDepthEstimation
from mesa_hf.training.sharding import apply_fsdp, full_state_dict, local_parameter_count, sharded_blocks


def main(mode: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same weights on every rank: apply_fsdp broadcasts rank 0's anyway
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_fsdp(model, mode)
    local, total = local_parameter_count(model)
    units = sum(isinstance(m, FSDPModule) for m in model.modules())
    gathered = full_state_dict(model)
    equal = None
    if rank == 0:
        equal = gathered.keys() == before.keys() and all(torch.equal(gathered[k], before[k]) for k in before)
    line = {"rank": rank, "mode": mode, "local": local, "total": total, "units": units}
    line.update(blocks=len(sharded_blocks(model)), gathered_equal=equal, gathered_keys=len(gathered))
    print("FSDP_SHARD " + json.dumps(line), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
