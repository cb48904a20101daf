"""Two-process gloo DDP: a Siamese DETR pretraining step runs, and the SimSiam projector / predictor
batch-norm statistics are synchronised across ranks although each rank sees different data."""
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        from detectron2.utils.events import EventStorage
        from torch.nn.parallel import DistributedDataParallel

        from test_siamese_detr_model import fake_batch, tiny_model

        model = tiny_model(seed=0).train()  # same initial weights on every rank
        ddp = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=False)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        batch = fake_batch(batch=2, seed=100 + rank)  # different data per rank
        with EventStorage():
            losses = ddp(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

        stats = {}
        for prefix, head in (("projector", model.projector), ("predictor", model.predictor)):
            for name, buf in head.named_buffers():
                if name.endswith("running_mean") or name.endswith("running_var"):
                    stats[f"{prefix}.{name}"] = buf.detach().numpy().copy()
        stats["first_image"] = batch[0]["views"][0]["image"].float().mean().reshape(1).numpy()
        stats["total_loss"] = np.array([total.item()])
        stats["query_embed"] = model.query_embed.weight.detach().numpy().copy()
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **stats)
    finally:
        dist.destroy_process_group()


def test_ddp_step_synchronises_simsiam_batch_norm(tmp_path):
    init_file = str(tmp_path / "dist_init")
    mp.spawn(_worker, args=(init_file, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [dict(np.load(str(tmp_path / f"rank{r}.npz"))) for r in range(WORLD_SIZE)]
    assert ranks[0]["first_image"][0] != ranks[1]["first_image"][0]  # the ranks saw different images
    assert all(np.isfinite(r["total_loss"][0]) for r in ranks)
    bn_keys = [k for k in ranks[0] if "running_" in k]
    assert len(bn_keys) == 2 * 4  # 3 BN in the projector + 1 in the predictor, mean and var each
    for key in bn_keys:
        assert np.allclose(ranks[0][key], ranks[1][key], atol=1e-6), key
        if key.endswith("running_var"):
            assert not np.allclose(ranks[0][key], 1.0), key  # statistics were updated by the step
    # the projector's first BN sees the (non-zero-mean) pooled encoder memory of both ranks
    assert not np.allclose(ranks[0]["projector.1.running_mean"], 0.0)
    # DDP averaged the gradients: parameters stay identical after the step
    assert np.allclose(ranks[0]["query_embed"], ranks[1]["query_embed"], atol=1e-6)
