"""Distributed training and evaluation on 2 CPU processes (gloo) against one process on the same data.

The expectation (official DETR's ``num_boxes`` reasoning, for every loss): with DDP averaging the gradients,
2 processes of batch b must give the loss (mean of the processes' values, as detectron2 logs it) and the
gradients of 1 process of batch 2 b on the same images. Inputs are built in the test process and split
between the ranks; images of one batch have the same size, so padding cannot differ between the set-ups.
"""
import os

import pytest
import torch

from siamese_detr.engine import launch

WORLD = 2


def _skip_with_cuda():
    if torch.cuda.is_available():
        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")


def _rank_shard(items, rank):
    """Rows ``[rank * n, (rank + 1) * n)`` of ``items`` (``n = len(items) / WORLD``)."""
    n = len(items) // WORLD
    return items[rank * n:(rank + 1) * n]


def _run_ranks(worker, tmp_path, *args):
    """``worker(out_dir, *args)`` in WORLD gloo processes; returns each rank's ``torch.save``d dict."""
    launch(worker, WORLD, dist_url="auto", args=(str(tmp_path),) + args)
    return [torch.load(str(tmp_path / f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


def _save(out_dir, payload):
    from detectron2.utils import comm

    torch.save(payload, os.path.join(out_dir, f"rank{comm.get_rank()}.pt"))


def _assert_like_one_process(reference, ranks, atol=1e-5):
    """Every loss: mean over ranks == one process; every gradient: each rank's rows / WORLD == one process's
    (what DDP's gradient averaging makes of them)."""
    for key, value in reference["losses"].items():
        mean = sum(r["losses"][key] for r in ranks) / WORLD
        assert mean == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for key, grad in reference["grads"].items():
        sharded = torch.cat([r["grads"][key] for r in ranks]) / WORLD
        assert torch.allclose(sharded, grad, atol=atol, rtol=1e-4), (key, (sharded - grad).abs().max())


# ------------------------------------------------------------------------------- SetCriterion, DETReg L_emb
COUNTS = [1, 4, 0, 3]  # target boxes per image: rank 0 gets 5, rank 1 gets 3


def _criterion_inputs(num_classes=3, queries=6, seed=0):
    """Outputs (with one auxiliary layer) and targets of a batch of ``len(COUNTS)`` images."""
    g = torch.Generator().manual_seed(seed)
    batch = len(COUNTS)

    def head():
        return {"pred_logits": torch.randn(batch, queries, num_classes + 1, generator=g),
                "pred_boxes": torch.rand(batch, queries, 4, generator=g) * 0.3 + 0.2}

    outputs = dict(head(), aux_outputs=[head()])
    targets = []
    for n in COUNTS:
        centre = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        size = torch.rand(n, 2, generator=g) * 0.2 + 0.1
        targets.append({"labels": torch.randint(0, num_classes, (n,), generator=g),
                        "boxes": torch.cat([centre, size], dim=1)})
    return outputs, targets


def _leaves(outputs, rows):
    """Leaf copies of the rows ``rows`` of every output tensor, and their names."""
    leaves = {}

    def take(d, prefix):
        out = {}
        for k, v in d.items():
            if k == "aux_outputs":
                out[k] = [take(a, f"{prefix}aux{i}.") for i, a in enumerate(v)]
            else:
                leaves[prefix + k] = v[rows].clone().requires_grad_(True)
                out[k] = leaves[prefix + k]
        return out

    return take(outputs, ""), leaves


def _criterion_step(class_loss, outputs, targets):
    """Unweighted criterion losses of the batch and the gradients of their sum w.r.t. the outputs."""
    from siamese_detr.modeling import FocalHungarianMatcher, HungarianMatcher, SetCriterion

    num_classes = 3
    if class_loss == "focal":
        outputs = dict(outputs, pred_logits=outputs["pred_logits"][..., :num_classes],
                       aux_outputs=[dict(a, pred_logits=a["pred_logits"][..., :num_classes])
                                    for a in outputs["aux_outputs"]])
        matcher = FocalHungarianMatcher(2.0, 5.0, 2.0)
    else:
        matcher = HungarianMatcher(1.0, 5.0, 2.0)
    criterion = SetCriterion(num_classes, matcher, eos_coef=0.1, class_loss=class_loss)
    rows = slice(None)
    outs, leaves = _leaves(outputs, rows)
    losses = criterion(outs, targets)
    sum(losses.values()).backward()
    return {"losses": {k: v.item() for k, v in losses.items()},
            "grads": {k: v.grad for k, v in leaves.items()}}


def _embedding_inputs(queries=6, channels=5, seed=1):
    """DETReg embedding-loss inputs: predictions ``[B, Q, C]``, per-image embeddings, query j <-> proposal j."""
    g = torch.Generator().manual_seed(seed)
    predictions = torch.randn(len(COUNTS), queries, channels, generator=g)
    embeddings = [torch.randn(n, channels, generator=g) for n in COUNTS]
    indices = [(torch.arange(n), torch.arange(n)) for n in COUNTS]
    return predictions, embeddings, indices


def _embedding_step(predictions, embeddings, indices):
    from siamese_detr.modeling.pretext import object_embedding_loss

    leaf = predictions.clone().requires_grad_(True)
    loss = object_embedding_loss(leaf, embeddings, indices)
    loss.backward()
    return {"losses": {"loss_object_embedding": loss.item()}, "grads": {"predictions": leaf.grad}}


def _loss_worker(out_dir, case):
    """``case`` "ce" / "focal": criterion losses of this rank's images; "embedding": DETReg's L_emb."""
    from detectron2.utils import comm

    torch.set_num_threads(1)
    rank = comm.get_rank()
    if case == "embedding":
        predictions, embeddings, indices = _embedding_inputs()
        _save(out_dir, _embedding_step(
            _rank_shard(predictions, rank), _rank_shard(embeddings, rank), _rank_shard(indices, rank)
        ))
        return
    outputs, targets = _criterion_inputs()
    shard = {k: _rank_shard(v, rank) for k, v in outputs.items() if k != "aux_outputs"}
    shard["aux_outputs"] = [{k: _rank_shard(v, rank) for k, v in a.items()} for a in outputs["aux_outputs"]]
    _save(out_dir, _criterion_step(case, shard, _rank_shard(targets, rank)))


@pytest.mark.parametrize("class_loss", ["ce", "focal"])
def test_set_criterion_under_ddp_equals_one_process(tmp_path, class_loss):
    """Softmax CE (its no-object-weighted mean: the denominator is averaged over processes) or focal, L1 and
    GIoU with an auxiliary layer, with different numbers of targets on the two ranks (5 and 3)."""
    _skip_with_cuda()
    ranks = _run_ranks(_loss_worker, tmp_path, class_loss)
    outputs, targets = _criterion_inputs()
    _assert_like_one_process(_criterion_step(class_loss, outputs, targets), ranks)


def test_detreg_embedding_loss_under_ddp_equals_one_process(tmp_path):
    """DETReg's L1 ``mean`` over matched pairs: the pair count is averaged over processes (5 and 3 here)."""
    _skip_with_cuda()
    ranks = _run_ranks(_loss_worker, tmp_path, "embedding")
    _assert_like_one_process(_embedding_step(*_embedding_inputs()), ranks)


def test_helpers_keep_single_process_values():
    """Without a process group the DDP-aware reductions are exactly the official ones."""
    import torch.nn.functional as F

    from siamese_detr.modeling.criterion import process_mean, weighted_cross_entropy
    from siamese_detr.modeling.pretext import object_embedding_loss

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 4, generator=g)
    target = torch.randint(0, 4, (2, 5), generator=g)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    assert torch.equal(weighted_cross_entropy(logits, target, weight),
                       F.cross_entropy(logits.transpose(1, 2), target, weight=weight))
    assert torch.equal(process_mean(torch.tensor(2.5)), torch.tensor(2.5))
    predictions, embeddings, indices = _embedding_inputs()
    expected = F.l1_loss(torch.cat([predictions[b, :n] for b, n in enumerate(COUNTS)]), torch.cat(embeddings))
    assert torch.allclose(object_embedding_loss(predictions, embeddings, indices), expected)


# ------------------------------------------------------------------------------------- Siamese DETR model
def _siamese_batch():
    """4 images of 2 views, all padded (as pixels) to one size: no batch padding in either set-up."""
    from test_siamese_detr_model import fake_batch

    batch = fake_batch(batch=4, seed=7)
    views = [v for x in batch for v in x["views"]]
    h = max(v["image"].shape[1] for v in views)
    w = max(v["image"].shape[2] for v in views)
    for v in views:
        image = v["image"]
        v["image"] = torch.nn.functional.pad(image, (0, w - image.shape[2], 0, h - image.shape[1]))
    return batch


def _conditional_siamese_model(seed=0):
    """``tiny_model`` with Conditional DETR's transformer of the same shape (d_model 32, 4 heads, 2 + 2 layers,
    FFN 64, dropout 0), as ``configs/demo/siamese_detr_conditional_pretrain_demo.py`` swaps it in."""
    from siamese_detr.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
    from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain
    from siamese_detr.modeling.transformers import ConditionalDetrTransformer

    from test_siamese_detr_model import WEIGHTS, tiny_backbone

    torch.manual_seed(seed)
    return SiameseDETRPretrain(
        backbone=tiny_backbone(),
        position_embedding=PositionEmbeddingSine(num_pos_feats=16),
        transformer=ConditionalDetrTransformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                               dim_feedforward=64, dropout=0.0),
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        num_queries=6,
        num_regions=3,
        weight_dict=dict(WEIGHTS),
        projection_dim=16,
        predictor_hidden_dim=8,
    )


def _siamese_step(batch, conditional=False, double=False):
    """Losses and gradients of the tiny Siamese DETR (Vanilla, or Conditional with ``conditional``); with
    ``double`` the same weights run in float64."""
    from detectron2.utils.events import EventStorage

    from test_siamese_detr_model import tiny_model

    model = (_conditional_siamese_model() if conditional else tiny_model(seed=0)).train()
    default_dtype = torch.get_default_dtype()
    if double:
        model.double()
        torch.set_default_dtype(torch.float64)  # tensors the model creates (targets, masks) follow
    try:
        with EventStorage():
            losses = model(batch)
        sum(losses.values()).backward()
    finally:
        torch.set_default_dtype(default_dtype)
    grads = {n: p.grad.detach().clone()[None] for n, p in model.named_parameters() if p.grad is not None}
    return {"losses": {k: v.item() for k, v in losses.items()}, "grads": grads}


def _siamese_worker(out_dir, *step_args):
    from detectron2.utils import comm

    torch.set_num_threads(1)
    result = _siamese_step(_rank_shard(_siamese_batch(), comm.get_rank()), *step_args)
    _save(out_dir, result)


def test_siamese_detr_losses_and_gradients_under_ddp_equal_one_process(tmp_path):
    """L_loc, L_r (num_boxes all-reduced) and L_g (SimSiam heads with synchronised per-view batch norm):
    2 x 2 images == 1 x 4 images, losses and DDP-averaged gradients of every parameter, in float64 and with the
    per-parameter bound of the Conditional twin below (in float32 one bound scaled by the largest gradient
    would let the small region-query gradients, ``query_embed`` and ``region_proj``, differ freely)."""
    _skip_with_cuda()
    ranks = _run_ranks(_siamese_worker, tmp_path, False, True)
    reference = _siamese_step(_siamese_batch(), double=True)
    _assert_ddp_gradients_equal_one_process(reference, ranks)


def _assert_ddp_gradients_equal_one_process(reference, ranks):
    """Losses to 1e-6 relative; per parameter ``||DDP average - one process|| <= 1e-5 * max(||one process||,
    1e-3 * largest gradient norm)`` (the floor: see the Conditional test's docstring)."""
    for key, value in reference["losses"].items():
        assert sum(r["losses"][key] for r in ranks) / WORLD == pytest.approx(value, rel=1e-6, abs=1e-8), key
    assert {k for r in ranks for k in r["grads"]} == set(reference["grads"])
    floor = 1e-3 * max(g.norm().item() for g in reference["grads"].values())
    for key, grad in reference["grads"].items():
        difference = (sum(r["grads"][key] for r in ranks) / WORLD - grad).norm().item()
        assert difference <= 1e-5 * max(grad.norm().item(), floor), (key, difference, grad.norm().item())


def test_conditional_siamese_detr_losses_and_gradients_under_ddp_equal_one_process(tmp_path):
    """The same for Siamese DETR on Conditional DETR (region queries as ``query_pos``, so they also move the
    reference points): 2 x 2 images == 1 x 4 images, losses and every parameter's DDP-averaged gradient.

    In float64, because float32 rounding alone differs by up to ~1e-3 relative here (encoder gradients, fed
    through the SimSiam batch norm over 4 rows per view); in float64 the two set-ups agree to ~2e-8, while a
    one-grey-level change of one image on one rank moves the gradients by O(1).

    Per parameter, ``||DDP average - one process|| <= 1e-5 * max(||one process||, 1e-3 * largest gradient
    norm)``. The floor is needed: several gradients are zero in exact arithmetic and hold only rounding noise
    (~1e-17 here, ~1e-8 in float32), so their relative differences are meaningless: the q / k projections of
    the first decoder layer's self-attention (``tgt = 0`` there, so every value is ``sa_v_proj.bias`` and the
    attention weights do not matter), the key-projection biases (softmax shift invariance) and the bias of
    the last projector layer (a batch norm follows). The "2.9e-2 on ``decoder_layers.0.sa_kpos_proj.weight``"
    of the DDP audit was such noise: that gradient's norm is ~5e-8 against a largest gradient norm of ~1e2.
    """
    _skip_with_cuda()
    ranks = _run_ranks(_siamese_worker, tmp_path, True, True)
    reference = _siamese_step(_siamese_batch(), conditional=True, double=True)
    _assert_ddp_gradients_equal_one_process(reference, ranks)


# --------------------------------------------------------------------------------------------- evaluation
def _fake_outputs(dicts, seed=5):
    """Deterministic detections near the ground truth of each dataset dict (``[{"instances": ...}]``)."""
    from detectron2.structures import Boxes, BoxMode, Instances

    g = torch.Generator().manual_seed(seed)
    outputs = []
    for d in dicts:
        gt = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]],
                          dtype=torch.float32).reshape(-1, 4)
        noisy = gt + torch.randn(gt.shape, generator=g) * 4
        extra = torch.rand(3, 2, generator=g) * 40
        boxes = torch.cat([noisy, torch.cat([extra, extra + 20], dim=1)])
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = torch.rand(len(boxes), generator=g)
        instances.pred_classes = torch.cat([
            torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64),
            torch.zeros(3, dtype=torch.int64)])
        outputs.append({"instances": instances})
    return outputs


def _evaluate(out_dir, shard):
    """COCOEvaluator and ClassAgnosticEvaluator results on this process's images of synthetic_shapes_val."""
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

    from siamese_detr.evaluation import ClassAgnosticEvaluator
    from siamese_detr.utils import detectron2_has_compiled_ops

    dicts = DatasetCatalog.get("synthetic_shapes_val")
    outputs = _fake_outputs(dicts)
    evaluator = DatasetEvaluators([
        COCOEvaluator("synthetic_shapes_val", output_dir=os.path.join(out_dir, "coco"),
                      use_fast_impl=detectron2_has_compiled_ops()),
        ClassAgnosticEvaluator("synthetic_shapes_val"),
    ])
    evaluator.reset()
    for i in shard(range(len(dicts))):
        evaluator.process([dicts[i]], [outputs[i]])
    return evaluator.evaluate()


def _eval_worker(out_dir, root):
    from detectron2.data.samplers import InferenceSampler

    from siamese_detr.data import register_synthetic_shapes

    os.environ["DETECTRON2_DATASETS"] = root
    register_synthetic_shapes(root=root, num_images={"train": 6, "val": 3})
    torch.set_num_threads(1)

    def shard(indices):  # detectron2's inference shards: rank 0 gets 2 images, rank 1 gets 1
        return [indices[i] for i in InferenceSampler(len(indices))]

    _save(out_dir, {"results": _evaluate(out_dir, shard)})


def test_evaluation_under_ddp_equals_one_process(tmp_path, tiny_synthetic_shapes):
    """3 test images (not divisible by 2), detectron2's inference sharding: the same COCO AP and class-agnostic
    AR / AP on the main process; the other process returns nothing."""
    _skip_with_cuda()
    ranks = _run_ranks(_eval_worker, tmp_path, str(tiny_synthetic_shapes))
    reference = _evaluate(str(tmp_path / "single"), lambda indices: list(indices))
    assert reference["bbox"]["AP"] > 0 and reference["class_agnostic"]["AP"] > 0
    assert ranks[1]["results"] == {}
    for task in ("bbox", "class_agnostic"):
        for key, value in reference[task].items():
            assert ranks[0]["results"][task][key] == pytest.approx(value, nan_ok=True), (task, key)
