"""SiameseDETRPretrain: shapes, gradient routing, MVCA direction, L_r target view, L_g context, eval mode,
training."""
import copy
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock
from detectron2.utils.events import EventStorage
from torchvision.ops import box_convert, roi_align

from siamese_detr.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain
from siamese_detr.modeling.pretext.losses import normalized_l2_distance
from pretext_test_utils import losses_over_steps, tiny_transformer

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 10.0}


def tiny_backbone(width=8):
    """Narrow ResNet-18-like backbone (one BasicBlock per stage), stride 32, FrozenBN, random weights."""
    stem = BasicStem(3, width, norm="FrozenBN")
    stages, in_ch = [], width
    for i, out_ch in enumerate([width, 2 * width, 4 * width, 8 * width]):
        stages.append(
            ResNet.make_stage(
                BasicBlock, 1, stride_per_block=[1 if i == 0 else 2], in_channels=in_ch, out_channels=out_ch,
                norm="FrozenBN",
            )
        )
        in_ch = out_ch
    return ResNet(stem, stages, out_features=["res5"], freeze_at=0)


def tiny_model(num_queries=6, num_regions=3, d_model=32, layers=2, weights=WEIGHTS, seed=0):
    torch.manual_seed(seed)
    return SiameseDETRPretrain(
        backbone=tiny_backbone(),
        position_embedding=PositionEmbeddingSine(num_pos_feats=d_model // 2),
        transformer=tiny_transformer(d_model, layers),
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        num_queries=num_queries,
        num_regions=num_regions,
        weight_dict=dict(weights),
        projection_dim=16,
        predictor_hidden_dim=8,
    )


def _random_boxes(g, n, h, w):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
    wh = (0.2 + 0.3 * torch.rand(n, 2, generator=g)) * torch.tensor([w, h])
    return torch.cat([xy, xy + wh], dim=1)


def fake_batch(batch=2, num_regions=3, crop=64, seed=0):
    """Mapper-like samples (contract of SiameseViewMapper) with random pixels and boxes."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(64, 96), (80, 64), (72, 72), (96, 80)]
    out = []
    for b in range(batch):
        views = []
        for v in range(2):
            h, w = sizes[(2 * b + v) % len(sizes)]
            boxes = _random_boxes(g, num_regions, h, w)
            views.append({
                "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
                "region_boxes": boxes,
                "query_boxes": boxes + torch.randn(num_regions, 4, generator=g),
                "crops": torch.randint(0, 256, (num_regions, 3, crop, crop), generator=g, dtype=torch.uint8),
            })
        out.append({"image_id": b, "height": 100, "width": 100, "views": views})
    return out


class Recorder:
    """Wraps model methods to capture hs, criterion targets/indices; optionally perturbs the memory."""

    def __init__(self, model, perturb_rows=None):
        self.model, self.perturb_rows = model, perturb_rows
        transformer, criterion = model.transformer, model.criterion
        encode, decode, crit = transformer.encode, transformer.decode, criterion.forward

        def encode_hook(*args, **kwargs):
            encoded = encode(*args, **kwargs)
            if self.perturb_rows is not None:
                encoded.memory = encoded.memory.clone()
                encoded.memory[self.perturb_rows] += 1.0
            return encoded

        def decode_hook(*args, **kwargs):
            decoded = decode(*args, **kwargs)
            self.hs = decoded.hidden_states
            self.hs.retain_grad()
            return decoded

        def crit_hook(outputs, targets, return_indices=False):
            self.targets = targets
            losses, self.indices = crit(outputs, targets, return_indices=True)
            return (losses, self.indices) if return_indices else losses

        transformer.encode, transformer.decode, criterion.forward = encode_hook, decode_hook, crit_hook


def test_num_queries_must_be_multiple_of_regions():
    with pytest.raises(ValueError, match=r"model.num_queries \(7\) must be a positive multiple of "
                       r"model.num_regions \(3\)"):
        tiny_model(num_queries=7, num_regions=3)


def test_training_losses_keys_and_frozen_backbone():
    model = tiny_model().train()
    assert not model.backbone.training
    with EventStorage():
        losses = model(fake_batch())
    expected = {"loss_ce", "loss_bbox", "loss_giou", "loss_region", "loss_global"}
    expected |= {f"{k}_0" for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_region")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    for name in ("input_proj", "transformer", "query_embed", "class_embed", "bbox_embed", "sem_embed",
                 "region_proj", "projector", "predictor"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads), name


def test_mvca_direction_and_targets_and_region_target_view():
    batch = fake_batch(batch=2)
    model = tiny_model().train()
    copies = [copy.deepcopy(model), copy.deepcopy(model)]  # before any method is wrapped
    base = Recorder(model)
    with EventStorage():
        model(batch)
    hs = base.hs.detach()
    B = 2
    # targets of queries from view 1 (rows 0..B-1) are view 2's region boxes, normalised by view 2's size
    for i, t in enumerate(base.targets):
        b, v = i % B, i // B
        other = batch[b]["views"][1 - v]
        h, w = other["image"].shape[1:]
        expected = box_convert(other["region_boxes"] / torch.tensor([w, h, w, h]), "xyxy", "cxcywh")
        assert torch.allclose(t["boxes"], expected, atol=1e-6)
        assert torch.equal(t["labels"], torch.zeros(3, dtype=torch.long))

    # perturbing view 2's memory (rows B..2B-1) changes only the queries built from view 1 (rows 0..B-1)
    cases = ((slice(B, 2 * B), slice(0, B)), (slice(0, B), slice(B, 2 * B)))
    for m, (perturbed, changed) in zip(copies, cases):
        rec = Recorder(m, perturb_rows=perturbed)
        with EventStorage():
            m(batch)
        unchanged = slice(0, B) if changed.start == B else slice(B, 2 * B)
        assert not torch.allclose(rec.hs[:, changed], hs[:, changed], atol=1e-4)
        assert torch.allclose(rec.hs[:, unchanged], hs[:, unchanged], atol=1e-5)

    # L_r target: crop features of the query's OWN view, computed crop by crop independently
    model.eval()
    with torch.no_grad():
        final = base.indices[-1]
        total = 0.0
        for i, (src, tgt) in enumerate(final):
            b, v = i % B, i // B
            sem = model.sem_embed(hs[-1, i])
            for q, r in zip(src.tolist(), tgt.tolist()):
                crop = batch[b]["views"][v]["crops"][r : r + 1]
                res5 = model.backbone(model.normalize(crop))["res5"]
                assert min(res5.shape[-2:]) >= 2  # a 1 x 1 map would make every pooling the same
                p = res5.mean(dim=(2, 3))[0]
                total += normalized_l2_distance(sem[q][None], p[None]).item()
    model.train()
    with EventStorage():
        losses = model(batch)
    assert abs(losses["loss_region"].item() / WEIGHTS["loss_region"] - total / (2 * B * 3)) < 1e-4


def test_region_loss_gradient_reaches_only_matched_queries_and_global_loss_skips_decoder():
    model = tiny_model(num_queries=9, num_regions=3).train()
    rec = Recorder(model)
    with EventStorage():
        losses = model(fake_batch())
    losses["loss_region"].backward(retain_graph=True)
    grad = rec.hs.grad[-1]  # [2B, Q, D]
    for i, (src, _) in enumerate(rec.indices[-1]):
        matched = set(src.tolist())
        for q in range(9):
            assert bool(grad[i, q].abs().sum() > 0) == (q in matched)

    model.zero_grad(set_to_none=True)
    losses["loss_global"].backward()
    for name in ("query_embed", "class_embed", "bbox_embed", "sem_embed", "region_proj"):
        assert all(p.grad is None for p in getattr(model, name).parameters()), name
    assert all(p.grad is None for p in model.transformer.decoder_layers.parameters())
    assert all(p.grad is not None for p in model.transformer.encoder_layers.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


def test_bad_inputs_raise_clear_errors():
    model = tiny_model().train()
    with pytest.raises(ValueError, match="empty batch"):
        model([])
    batch = fake_batch(batch=1)
    for key in ("region_boxes", "query_boxes"):
        batch[0]["views"][1][key] = batch[0]["views"][1][key][:0]
    batch[0]["views"][1]["crops"] = batch[0]["views"][1]["crops"][:0]
    with pytest.raises(ValueError, match="no regions"):
        model(batch)
    batch = fake_batch(batch=1, num_regions=2)
    with pytest.raises(ValueError, match="num_regions=3"):
        model(batch)


def test_eval_returns_class_agnostic_detections_in_original_size():
    """Eval mode: one class-agnostic detection per query; each box is the network's normalised cxcywh box
    (captured from ``forward_outputs``) converted by torchvision and scaled by the ORIGINAL size (128 x 192
    for a 64 x 96 input; the input's own size without ``height`` / ``width``), clipped to the image. Boxes
    left in the input's coordinates would still lie inside the 128 x 192 image: only the values tell."""
    model = tiny_model(num_queries=6).eval()
    g = torch.Generator().manual_seed(0)
    inputs = [
        {
            "image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8),
            "height": 128,
            "width": 192,
        },
        {"image": torch.randint(0, 256, (3, 80, 64), generator=g, dtype=torch.uint8)},
    ]
    raw = {}
    forward_outputs = model.forward_outputs

    def capture(images):
        raw["out"], raw["sizes"] = forward_outputs(images), list(images.image_sizes)
        return raw["out"]

    model.forward_outputs = capture
    with torch.no_grad():
        out = model(inputs)
    assert [o["instances"].image_size for o in out] == [(128, 192), (80, 64)]
    assert [tuple(s) for s in raw["sizes"]] == [(64, 96), (80, 64)]  # what the network was fed
    for b, (o, (h, w)) in enumerate(zip(out, [(128, 192), (80, 64)])):
        inst = o["instances"]
        assert len(inst) == 6
        assert bool((inst.pred_classes == 0).all())
        assert bool(((inst.scores >= 0) & (inst.scores <= 1)).all())
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        expected = box_convert(raw["out"]["pred_boxes"][b], "cxcywh", "xyxy") * scale
        expected = torch.minimum(expected.clamp(min=0), scale)  # detector_postprocess clips to the image
        assert torch.allclose(inst.pred_boxes.tensor, expected, rtol=0, atol=1e-4)
        assert torch.allclose(inst.scores, raw["out"]["pred_logits"][b].softmax(-1)[:, 0], rtol=0, atol=1e-6)
    # the check can tell: the first image's boxes in input (64 x 96) coordinates are off by many pixels
    in_input = box_convert(raw["out"]["pred_boxes"][0], "cxcywh", "xyxy").clamp(0, 1) * torch.tensor([96, 64, 96, 64])
    assert (in_input - out[0]["instances"].pred_boxes.tensor).abs().max() > 10


def test_all_crops_and_views_use_one_backbone_call_each():
    model = tiny_model().train()
    calls = []
    model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    with EventStorage():
        model(fake_batch(batch=2, crop=32))
    assert len(calls) == 2
    assert calls[0][0] == 4  # 2 images x 2 views
    assert calls[1] == (2 * 2 * 3, 3, 32, 32)  # all crops of the batch


def test_a_few_steps_on_builtin_dataset_lower_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    from detectron2.data import DatasetCatalog

    import siamese_detr.data  # noqa: F401  (registers the built-in dataset)
    from siamese_detr.data.siamese_mapper import SiameseViewMapper

    dicts = DatasetCatalog.get("synthetic_shapes_train")[:2]
    mapper = SiameseViewMapper(
        short_side_range=(80, 96), max_size=128, num_regions=3, crop_size=32, seed=0
    )
    batch = [mapper(d) for d in dicts]
    assert all(x is not None for x in batch)
    model = tiny_model(num_queries=6, num_regions=3).train()
    totals = losses_over_steps(model, batch, weight_decay=1e-4, clip_max_norm=0.1)
    assert totals[-1] < totals[0], totals


def test_region_queries_are_per_image():
    """Every image of a batch decodes its OWN region queries (the official Deformable pretraining gave all
    images the first image's): queries of row i = region_proj(z_i) repeated Q/n times + query_embed."""
    model = tiny_model(num_queries=6, num_regions=3).train()
    seen = {}
    decode = model.transformer.decode

    def capture(memory, queries, **kwargs):
        seen["queries"] = queries.detach()
        return decode(memory, queries, **kwargs)

    model.transformer.decode = capture
    batch = fake_batch(batch=2)
    with EventStorage():
        model(batch)
    queries = seen["queries"]  # [2B, Q, D], view-major rows
    assert queries.shape == (4, 6, 32)
    assert not torch.allclose(queries[0], queries[1], atol=1e-3)  # image 0 vs image 1, view 1
    # row 1 (image 1, view 1) rebuilt independently from image 1's query boxes alone
    with torch.no_grad():
        view = batch[1]["views"][0]
        images = model.pad_images([view["image"]])
        feats = model.backbone_features(images.tensor)[0]  # [1, C, H, W]
        z = roi_align(feats, [view["query_boxes"].float()], 7, spatial_scale=1 / 32, sampling_ratio=-1,
                      aligned=model.roi_aligned).mean(dim=(2, 3))  # [n, C]
        expected = model.region_proj(z).repeat_interleave(2, dim=0) + model.query_embed.weight
    assert torch.allclose(queries[1], expected, atol=1e-5)


def test_batch_of_one_in_one_process_is_a_clear_error():
    """Per-view batch-norm statistics of the SimSiam heads need >= 2 images per view."""
    model = tiny_model().train()
    with EventStorage(), pytest.raises(ValueError, match="total_batch_size >= 2"):
        model(fake_batch(batch=1))


def test_multi_scale_global_context_is_per_level_and_one_training_step_runs():
    """Deformable-MS demo config (C3-C5 + a stride-64 level, 4 levels): L_g's context, the projector's input
    ``[2B, 3 d]``, is the masked average of each of the first 3 levels, concatenated (official Deform-MS
    ``NonLinearNeckV3(in_channels=256 * 3)`` on ``x[:3]``); recomputed here from the encoder memory, level by
    level from the token counts H_l W_l. Single-level models keep a d-wide projector. One AdamW step runs."""
    root = Path(__file__).resolve().parents[1]
    cfg = LazyConfig.load(str(root / "configs/demo/siamese_detr_deformable_pretrain_demo.py"))
    cfg.model.transformer.num_encoder_layers = 1
    cfg.model.num_regions, cfg.model.num_queries = 3, 6
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    d = model.transformer.d_model
    assert len(model.input_proj) == 4 and model.global_context_levels == 3
    assert model.projector[0].weight.shape[1] == 3 * d
    single = tiny_model()
    assert single.global_context_levels == 1 and single.projector[0].weight.shape[1] == 32
    seen = {}
    encode = model.encode

    def capture(images):
        features, memory = encode(images)
        seen["memory"] = memory
        return features, memory

    model.encode = capture

    def capture_context(module, args):  # returns None: the input is not replaced
        seen["context"] = args[0].detach()

    model.projector.register_forward_pre_hook(capture_context)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with EventStorage():
        total = sum(model(fake_batch(batch=2, num_regions=3)).values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert torch.isfinite(total)
    assert model.projector[0].weight.grad.abs().sum() > 0
    memory = seen["memory"]
    sizes = [h * w for h, w in memory.spatial_shapes.tolist()]
    assert len(sizes) == 4 and memory.padding_mask.any()  # padded batch: the masking matters
    parts, start = [], 0
    for size in sizes[:3]:  # level-major tokens; the 4th (stride-64) level is left out
        tokens = memory.memory[:, start:start + size].detach().double()
        valid = (~memory.padding_mask[:, start:start + size]).double().unsqueeze(-1)
        parts.append((tokens * valid).sum(1) / valid.sum(1))
        start += size
    expected = torch.cat(parts, dim=1)  # [2B, 3 d]
    assert seen["context"].shape == (4, 3 * d)
    assert torch.allclose(seen["context"].double(), expected, atol=1e-5)


@pytest.mark.parametrize("num_regions, num_queries, message", [
    (1, 6, "model.num_regions must be >= 2"), (0, 6, "model.num_regions must be >= 2"),
    (4, 6, r"model.num_queries \(6\) must be a positive multiple of model.num_regions \(4\)")])
def test_region_counts_that_cannot_train_are_refused(num_regions, num_queries, message):
    """One region would be the views' overlap alone: the mapper skips every such sample, so the model and the
    view policy refuse it up front instead of a loader that never yields."""
    from siamese_detr.data.views import ViewPolicy

    with pytest.raises(ValueError, match=message):
        tiny_model(num_queries=num_queries, num_regions=num_regions)
    if num_regions < 2:
        with pytest.raises(ValueError, match="dataloader.train.mapper.num_regions must be >= 2"):
            ViewPolicy(num_regions=num_regions)


def test_region_loss_uses_the_criterions_num_boxes():
    """L_r is normalised like the box losses, by ``criterion.get_num_boxes`` (under DDP the target count
    averaged over the processes, not this process's own count). With it patched to 1, ``loss_region`` is
    the SUM over the 2B * n matched pairs: exactly 2 * 2 * 3 = 12 times the unpatched value."""
    model = tiny_model().train()
    patched = copy.deepcopy(model)
    patched.criterion.get_num_boxes = lambda targets, device: 1.0
    batch = fake_batch(batch=2)
    with EventStorage():
        base = model(batch)["loss_region"].item()
        summed = patched(batch)["loss_region"].item()
    assert summed == pytest.approx(12 * base, rel=1e-5)


def test_more_bad_set_ups_and_inputs_are_refused_by_name():
    """Refused with a message naming the culprit: no L_g context level; a weight_dict without ``loss_global``;
    a view whose crops or query boxes do not match its region boxes (2 + 4 would fill the 2 x 3 rows of the
    batch silently, misaligned); training inputs given in eval mode."""
    def build(**kwargs):
        args = dict(
            backbone=tiny_backbone(), position_embedding=PositionEmbeddingSine(num_pos_feats=16),
            transformer=tiny_transformer(32, 2), criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0)),
            num_queries=6, num_regions=3, weight_dict=dict(WEIGHTS), projection_dim=16, predictor_hidden_dim=8,
        )
        args.update(kwargs)
        return SiameseDETRPretrain(**args)

    with pytest.raises(ValueError, match="model.global_context_levels must be >= 1"):
        build(global_context_levels=0)
    weights = {k: v for k, v in WEIGHTS.items() if k != "loss_global"}
    with pytest.raises(ValueError, match=r"model.weight_dict lacks \['loss_global'\]"):
        build(weight_dict=weights)
    model = tiny_model().train()
    batch = fake_batch(batch=2)
    crops = batch[0]["views"][1]["crops"]
    batch[0]["views"][1]["crops"] = crops[:2]
    batch[1]["views"][1]["crops"] = torch.cat([batch[1]["views"][1]["crops"], crops[:1]])
    with EventStorage(), pytest.raises(ValueError, match="3 region boxes, 3 query boxes, 2 crops"):
        model(batch)
    batch = fake_batch(batch=2)  # the same for the jittered query boxes (rows of z)
    boxes = batch[0]["views"][0]["query_boxes"]
    batch[0]["views"][0]["query_boxes"] = boxes[:2]
    batch[1]["views"][0]["query_boxes"] = torch.cat([batch[1]["views"][0]["query_boxes"], boxes[:1]])
    with EventStorage(), pytest.raises(ValueError, match="3 region boxes, 2 query boxes, 3 crops"):
        model(batch)
    model.eval()
    with pytest.raises(ValueError, match="in eval mode expects .* dicts with 'image'"):
        model(fake_batch(batch=2))
