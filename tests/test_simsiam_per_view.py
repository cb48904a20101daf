"""Per-view BatchNorm statistics of the SimSiam heads: one call with ``num_views=2`` on view-major rows
equals one call per view (the official heads call projector and predictor once per view), in training and
eval, on one process and under two-process gloo DDP (NaiveSyncBatchNorm semantics)."""
import copy
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from siamese_detr.modeling.pretext.simsiam import SimSiamPredictor, SimSiamProjector, SyncBatchNorm1d

B, C = 5, 8


def _heads(seed=0):
    torch.manual_seed(seed)
    return SimSiamProjector(C, 12, C), SimSiamPredictor(C, 6, C)


def _views(seed, b=B):
    g = torch.Generator().manual_seed(seed)
    # two views with clearly different statistics (shift and scale), view-major rows
    v1 = torch.randn(b, C, generator=g) * 2.0 + 1.0
    v2 = torch.randn(b, C, generator=g) * 0.5 - 3.0
    return torch.cat([v1, v2])


def _buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


def test_single_bn_matches_hand_normalisation_per_view():
    bn = SyncBatchNorm1d(C).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    x = _views(1)
    out = bn(x, num_views=2)
    for v in range(2):
        chunk = x[v * B : (v + 1) * B].double()
        mean, var = chunk.mean(0), chunk.var(0, unbiased=False)
        expected = (chunk - mean) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
        assert torch.allclose(out[v * B : (v + 1) * B].double(), expected, atol=1e-5)
    # running stats: two successive momentum updates with the unbiased variances (plain BatchNorm)
    m = bn.momentum
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for v in range(2):
        chunk = x[v * B : (v + 1) * B].double()
        rm = (1 - m) * rm + m * chunk.mean(0)
        rv = (1 - m) * rv + m * chunk.var(0, unbiased=True)
    assert torch.allclose(bn.running_mean.double(), rm, atol=1e-6)
    assert torch.allclose(bn.running_var.double(), rv, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2
    # one joint batch would normalise differently (the point of per-view statistics)
    joint = SyncBatchNorm1d(C).train()
    joint.weight.data.copy_(bn.weight.data)
    joint.bias.data.copy_(bn.bias.data)
    assert not torch.allclose(joint(x), out, atol=1e-2)


def test_heads_one_call_equals_two_calls_train_and_eval():
    for head in _heads(0):
        head.train()
        twin = copy.deepcopy(head)
        x = _views(2).requires_grad_(True)
        x_twin = x.detach().clone().requires_grad_(True)
        out = head(x, num_views=2)
        ref = torch.cat([twin(x_twin[:B]), twin(x_twin[B:])])
        assert torch.allclose(out, ref, atol=1e-6)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        (out * weights).sum().backward()
        (ref * weights).sum().backward()
        assert torch.allclose(x.grad, x_twin.grad, atol=1e-5)
        for (name, p), (_, q) in zip(head.named_parameters(), twin.named_parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name
        ours, theirs = _buffers(head), _buffers(twin)
        assert ours.keys() == theirs.keys()
        for k in ours:
            assert torch.allclose(ours[k].double(), theirs[k].double(), atol=1e-6), k
        # eval: running statistics, per view or not makes no difference
        head.eval()
        twin.eval()
        x = _views(4)
        ev = head(x, num_views=2)
        assert torch.allclose(ev, torch.cat([twin(x[:B]), twin(x[B:])]), atol=1e-6)
        assert torch.allclose(ev, head(x), atol=1e-6)


def test_num_views_one_is_the_old_joint_batch_and_bad_splits_fail():
    proj, _ = _heads(0)
    twin = copy.deepcopy(proj)
    x = _views(5)
    assert torch.allclose(proj.train()(x), twin.train()(x, num_views=1))
    try:
        proj(x[:-1], num_views=2)
    except ValueError as e:
        assert "equal views" in str(e)
    else:
        raise AssertionError("odd rows must not split into 2 views")


WORLD_SIZE = 2


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        results = {}
        for name, head in zip(("projector", "predictor"), _heads(0)):  # same weights on every rank
            head.train()
            twin = copy.deepcopy(head)
            x = _views(10 + rank).requires_grad_(True)  # different data per rank
            x_twin = x.detach().clone().requires_grad_(True)
            out = head(x, num_views=2)
            ref = torch.cat([twin(x_twin[:B]), twin(x_twin[B:])])  # NaiveSyncBatchNorm, one call per view
            weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(20 + rank))
            (out * weights).sum().backward()
            (ref * weights).sum().backward()
            results[f"{name}.out"] = out.detach().numpy()
            results[f"{name}.ref"] = ref.detach().numpy()
            results[f"{name}.grad"] = x.grad.numpy()
            results[f"{name}.grad_ref"] = x_twin.grad.numpy()
            for k, v in _buffers(head).items():
                if "running" in k:
                    results[f"{name}.{k}"] = v.numpy()
                    results[f"{name}.{k}.ref"] = dict(twin.named_buffers())[k].detach().numpy()
            # eval under DDP: running statistics, no all-reduce, no update (a joint call equals a plain one)
            head.eval()
            twin.eval()
            with torch.no_grad():
                results[f"{name}.eval"] = head(x.detach(), num_views=2).numpy()
                results[f"{name}.eval.ref"] = twin(x.detach()).numpy()
            results[f"{name}.eval.buffers_kept"] = np.array(
                all(torch.equal(v, dict(head.named_buffers())[k]) for k, v in _buffers(twin).items())
            )
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **results)
    finally:
        dist.destroy_process_group()


def test_ddp_per_view_equals_per_view_calls_of_naive_sync_batch_norm(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [dict(np.load(str(tmp_path / f"rank{r}.npz"))) for r in range(WORLD_SIZE)]
    for r in ranks:
        for name in ("projector", "predictor"):
            assert np.allclose(r[f"{name}.out"], r[f"{name}.ref"], atol=1e-5)
            assert np.allclose(r[f"{name}.grad"], r[f"{name}.grad_ref"], atol=1e-5)
            assert np.allclose(r[f"{name}.eval"], r[f"{name}.eval.ref"], atol=1e-6)
            assert bool(r[f"{name}.eval.buffers_kept"])
        for k in [k for k in r if "running" in k and not k.endswith(".ref")]:
            assert np.allclose(r[k], r[k + ".ref"], atol=1e-6), k
    running = [k for k in ranks[0] if "running" in k and not k.endswith(".ref")]
    assert len(running) == 2 * 4
    for k in running:  # synchronised: identical on both ranks although the data differ
        assert np.allclose(ranks[0][k], ranks[1][k], atol=1e-6), k
    # hand check of the first BN's per-view statistics: the mean over ranks of each rank's view mean
    torch.manual_seed(0)
    proj, _ = _heads(0)
    w = proj[0].weight.detach()
    m = proj[1].momentum
    rm = torch.zeros(12)
    for v in range(2):
        per_rank = [(_views(10 + r)[v * B : (v + 1) * B] @ w.T).mean(0) for r in range(WORLD_SIZE)]
        rm = (1 - m) * rm + m * torch.stack(per_rank).mean(0)
    assert np.allclose(ranks[0]["projector.1.running_mean"], rm.numpy(), atol=1e-5)
