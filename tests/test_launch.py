"""CPU multi-process launch over gloo: detectron2's comm works in every worker."""
import json
import os

import torch

from siamese_detr.engine import launch


def _worker(out_dir):
    from detectron2.utils import comm

    rank = comm.get_rank()
    gathered = comm.all_gather(rank * 10)
    info = {"rank": rank, "world": comm.get_world_size(), "local_rank": comm.get_local_rank(),
            "local_size": comm.get_local_size(), "gathered": gathered}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)


def test_two_cpu_processes_join_one_gloo_group(tmp_path):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path),))
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert info == {"rank": r, "world": 2, "local_rank": r, "local_size": 2, "gathered": [0, 10]}
