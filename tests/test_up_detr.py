"""UP-DETR pretraining: attention mask, patch geometry, feature dropout, feature loss, mapper, training, handoff."""
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.utils.events import EventStorage

from siamese_detr.data.up_detr_mapper import UPDETRMapper, random_patch_boxes
from siamese_detr.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.up_detr import UPDETRPretrain
from siamese_detr.modeling.pretext.query_groups import group_attention_mask, query_feature_dropout
from test_siamese_detr_model import tiny_backbone
from test_siamese_handoff import tiny_detr
from pretext_test_utils import fake_query_batch, load_and_report, losses_over_steps, tiny_transformer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_feature": 1.0}


def tiny_up_detr(num_queries=6, num_patches=3, d_model=32, layers=2, mask_ratio=0.1, seed=0):
    torch.manual_seed(seed)
    return UPDETRPretrain(
        backbone=tiny_backbone(),
        position_embedding=PositionEmbeddingSine(num_pos_feats=d_model // 2),
        transformer=tiny_transformer(d_model, layers),
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        weight_dict=dict(WEIGHTS),
        num_queries=num_queries,
        num_patches=num_patches,
        mask_ratio=mask_ratio,
    )


def fake_batch(batch=2, num_patches=3, size=64, seed=0):
    return fake_query_batch([num_patches] * batch, "patches", "patch_boxes", size=size, seed=seed)


@pytest.mark.parametrize("queries,groups", [(6, 3), (12, 4), (12, 2), (20, 5), (100, 10), (8, 1), (8, 8)])
def test_attention_mask_blocks_exactly_cross_group_pairs(queries, groups):
    mask = group_attention_mask(queries, groups)
    size = queries // groups
    expected = torch.tensor([[i // size != j // size for j in range(queries)] for i in range(queries)])
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    assert int((~mask).sum()) == groups * size * size  # n blocks of (Q/n)^2 allowed pairs


def test_attention_mask_rejects_non_divisors():
    with pytest.raises(ValueError):
        group_attention_mask(10, 3)


def test_decoder_honours_the_group_mask():
    """Changing the queries of one group leaves every other group's decoder output unchanged."""
    model = tiny_up_detr(num_queries=6, num_patches=3).eval()
    images = model.preprocess_image(fake_batch(batch=1))
    with torch.no_grad():
        _, memory = model.encode(images)
        queries = model.object_queries(1).clone()
        base = model.decode(memory, queries, self_attn_mask=model.attention_mask).hidden_states
        changed = queries.clone()
        changed[:, 2:4] += torch.randn(1, 2, queries.shape[-1])  # group 1 only
        out = model.decode(memory, changed, self_attn_mask=model.attention_mask).hidden_states
        free = model.decode(memory, changed).hidden_states
    assert torch.allclose(out[:, :, [0, 1, 4, 5]], base[:, :, [0, 1, 4, 5]], atol=1e-6)
    assert not torch.allclose(out[:, :, 2:4], base[:, :, 2:4], atol=1e-3)
    assert not torch.allclose(free[-1, :, [0, 1]], base[-1, :, [0, 1]], atol=1e-4)  # unmasked: they interact


def test_random_patch_geometry_within_bounds():
    rng = np.random.default_rng(0)
    for h, w in [(17, 17), (40, 90), (300, 200)]:
        boxes = random_patch_boxes(rng, h, w, 500, min_pixel=8)
        x0, y0, x1, y1 = boxes.T
        sw, sh = x1 - x0, y1 - y0
        assert np.all(boxes == np.round(boxes))
        assert sw.min() >= 8 and sw.max() <= w - 8 and sh.min() >= 8 and sh.max() <= h - 8
        assert x0.min() >= 0 and y0.min() >= 0 and np.all(x0 <= w - sw - 1) and np.all(y0 <= h - sh - 1)
        if w > 100:  # the sizes cover the allowed range (uniform draws)
            assert sw.min() < 8 + 0.1 * w and sw.max() > w - 8 - 0.1 * w
        else:  # few sizes, 500 draws: every one occurs, both ends included (official randint(8, W - 8 + 1))
            assert set(sw.astype(int)) == set(range(8, w - 7)) and set(sh.astype(int)) == set(range(8, h - 7))
    with pytest.raises(ValueError):
        random_patch_boxes(rng, 16, 100, 1)


def test_mapper_patches_and_boxes_follow_the_resize(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, image)
    mapper = UPDETRMapper(num_patches=4, patch_size=16, augmentation=[T.ResizeShortestEdge(120, max_size=1000)],
                          seed=0)
    out = mapper({"file_name": path, "image_id": 7})
    assert out["image"].shape == (3, 120, 180) and out["patches"].shape == (4, 3, 16, 16)
    boxes = out["patch_boxes"]
    assert boxes.shape == (4, 4) and boxes.dtype == torch.float32
    # the same draws on the original image, scaled by 2 (the resize)
    again = random_patch_boxes(np.random.default_rng(np.random.SeedSequence([0, 0, 0, 0])), 60, 90, 4)
    assert torch.allclose(boxes, torch.as_tensor(again * 2, dtype=torch.float32))
    small = str(tmp_path / "small.png")
    cv2.imwrite(small, image[:16])
    assert mapper({"file_name": small, "image_id": 8}) is None  # official: images with a side <= 16 skipped


def test_mapper_skips_samples_whose_crop_empties_a_patch_box(tmp_path, caplog):
    """A custom crop can cut a patch's box away: such a sample would carry a zero-area target for a patch the
    model still matches, so it is skipped and counted; the samples returned keep every box with positive area."""
    image = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, image)
    mapper = UPDETRMapper(num_patches=4, patch_size=16, augmentation=[T.RandomCrop("absolute", (20, 20))], seed=0)
    with caplog.at_level("WARNING", logger="siamese_detr.data.up_detr_mapper"):
        outputs = [mapper({"file_name": path, "image_id": i}) for i in range(30)]
    kept = [out for out in outputs if out is not None]
    assert mapper.num_patch_cropped_out == len(outputs) - len(kept) > 0 and kept
    warned = [r.getMessage() for r in caplog.records if "cropped a query patch's box out" in r.getMessage()]
    expected = [n for n in (1, 10) if n <= mapper.num_patch_cropped_out]  # at the 1st, 10th, 100th, ... skip
    assert [int(message.split()[1]) for message in warned] == expected
    for out in kept:
        boxes = out["patch_boxes"]
        assert boxes.shape == (4, 4) and out["patches"].shape[0] == 4
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert (boxes[:, 0::2] <= 20).all() and (boxes[:, 1::2] <= 20).all()


def test_feature_dropout_rate_and_no_rescaling():
    torch.manual_seed(0)
    features = torch.full((50, 100, 3), 2.0)
    dropped, keep = query_feature_dropout(features, 0.1)
    rate = 1 - keep.mean().item()
    assert abs(rate - 0.1) < 0.02  # 5000 draws: std 0.0042
    assert torch.equal(dropped, features * keep) and set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(query_feature_dropout(features, 0.0)[0], features)


def test_patch_queries_repeat_patches_in_groups_and_skip_dropout_in_eval():
    model = tiny_up_detr(num_queries=6, num_patches=3, mask_ratio=0.5)
    features = torch.randn(2, 3, model.region_proj.in_features)
    model.eval()
    with torch.no_grad():
        queries = model.patch_queries(features)
        projected = model.region_proj(features)
    expected = projected[:, [0, 0, 1, 1, 2, 2]] + model.query_embed.weight
    assert torch.allclose(queries, expected, atol=1e-6)
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        train_queries = model.patch_queries(features)
    diff = train_queries - model.query_embed.weight
    zero = diff.abs().sum(-1) < 1e-6
    assert zero.any() and (~zero).any()  # some queries lost their patch feature, the others kept it exactly
    assert torch.allclose(diff[~zero], projected[:, [0, 0, 1, 1, 2, 2]][~zero], atol=1e-6)


def test_losses_and_feature_loss_against_explicit_computation():
    model = tiny_up_detr(mask_ratio=0.0).train()
    seen = {}
    decode, criterion_forward = model.decode, model.criterion.forward

    def record_decode(*args, **kwargs):
        seen["decoded"] = decode(*args, **kwargs)
        return seen["decoded"]

    def record_criterion(outputs, targets, return_indices=False):
        losses, indices = criterion_forward(outputs, targets, return_indices=True)
        seen["indices"], seen["targets"] = indices, targets
        return losses, indices

    model.decode, model.criterion.forward = record_decode, record_criterion
    batch = fake_batch()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_feature") for s in ("", "_0")}
    with torch.no_grad():
        patches = torch.cat([x["patches"] for x in batch]).float()
        patches = (patches - model.pixel_mean) / model.pixel_std
        res5 = model.backbone(patches)["res5"]
        assert min(res5.shape[-2:]) >= 2  # a 1 x 1 map would make every pooling the same
        p = res5.mean(dim=(2, 3)).view(2, 3, -1)
        hs = seen["decoded"].hidden_states
        for layer, name in ((0, "loss_feature_0"), (1, "loss_feature")):
            total = 0.0
            for b, (src, tgt) in enumerate(seen["indices"][layer]):
                for i, j in zip(src.tolist(), tgt.tolist()):
                    a = model.sem_embed(hs[layer, b, i])
                    total += ((a / a.norm() - p[b, j] / p[b, j].norm()) ** 2).sum()
            assert torch.allclose(losses[name], total / 6 * WEIGHTS["loss_feature"], atol=1e-5), name
    # targets: every patch box, label 0, cxcywh normalised by the image size
    t = seen["targets"][1]
    h, w = batch[1]["image"].shape[1:]
    x0, y0, x1, y1 = batch[1]["patch_boxes"][0].tolist()
    assert torch.allclose(t["boxes"][0], torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w,
                                                      (y1 - y0) / h]), atol=1e-6)
    assert t["labels"].tolist() == [0, 0, 0]


def test_frozen_backbone_and_one_backbone_call_for_all_patches():
    model = tiny_up_detr().train()
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    calls = []
    model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    with EventStorage():
        model(fake_batch(batch=2, size=32))
    assert len(calls) == 2 and calls[1] == (6, 3, 32, 32)


def test_bad_inputs_raise_clear_errors():
    model = tiny_up_detr().train()
    batch = fake_batch()
    batch[0]["patches"] = batch[0]["patches"][:2]
    with pytest.raises(ValueError, match="num_patches"):
        model(batch)
    message = r"model.num_queries \(6\) must be a positive multiple of model.num_patches \(4\)"
    with pytest.raises(ValueError, match=message):
        tiny_up_detr(num_queries=6, num_patches=4)


def test_a_few_steps_on_builtin_dataset_lower_the_loss(tiny_synthetic_shapes):
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("synthetic_shapes_train")[:2]
    mapper = UPDETRMapper(num_patches=3, patch_size=32, augmentation=[T.ResizeShortestEdge(96, max_size=128)],
                          seed=0)
    batch = [mapper(d) for d in dicts]
    totals = losses_over_steps(tiny_up_detr(mask_ratio=0.0).train(), batch)
    assert totals[-1] < totals[0], totals


def test_checkpoint_hands_off_to_detr(tmp_path):
    DetectionCheckpointer(tiny_up_detr(), save_dir=str(tmp_path)).save("model_final")
    incompatible = load_and_report(tiny_detr(), str(tmp_path / "model_final.pth"))
    assert sorted(k for k, _, _ in incompatible.incorrect_shapes) == [
        f"class_embed.{i}.{k}" for i in (0, 1) for k in ("bias", "weight")]
    sem_embed = [f"sem_embed.layers.{i}.{k}" for i in (0, 1) for k in ("weight", "bias")]
    assert sorted(incompatible.unexpected_keys) == sorted(["region_proj.weight", "region_proj.bias"] + sem_embed)


def test_config_shapes_match_the_finetune_detr():
    pre = instantiate(LazyConfig.load(os.path.join(CONFIGS, "up_detr", "up_detr_r50_coco_60ep.py")).model)
    fine = instantiate(LazyConfig.load(os.path.join(CONFIGS, "detr", "detr_r50_coco_150ep.py")).model)
    pre_sd, fine_sd = pre.state_dict(), fine.state_dict()
    assert sorted(k for k in fine_sd if k not in pre_sd) == []
    assert sorted(k for k in fine_sd if pre_sd[k].shape != fine_sd[k].shape) == sorted(
        f"class_embed.{i}.{k}" for i in range(6) for k in ("bias", "weight"))
    assert {k.split(".")[0] for k in pre_sd if k not in fine_sd} == {"region_proj", "sem_embed"}


def test_demo_configs_hand_off_to_the_finetune_demo():
    """The UP-DETR and DETReg demo checkpoints load into configs/demo/detr_demo.py (shapes only, meta device)."""
    with torch.device("meta"):
        fine = instantiate(LazyConfig.load(os.path.join(CONFIGS, "demo", "detr_demo.py")).model).state_dict()
        for name, extra in (("up_detr_pretrain_demo.py", {"region_proj", "sem_embed"}),
                            ("detreg_pretrain_demo.py", {"sem_embed"})):
            pre = instantiate(LazyConfig.load(os.path.join(CONFIGS, "demo", name)).model).state_dict()
            assert sorted(k for k in fine if k not in pre) == [], name
            assert all(pre[k].shape == fine[k].shape for k in fine if not k.startswith("class_embed.")), name
            assert {k.split(".")[0] for k in pre if k not in fine} == extra, name


def test_mapper_draws_a_fresh_stream_per_call_reproducible_from_the_seed(tmp_path):
    """Each call draws from its own generator, seeded with (seed, rank, worker id, call index): two calls on the
    SAME image give different patches, the k-th call's boxes are the official draws of
    ``SeedSequence([seed, 0, 0, k])`` (one process, no worker), and a new mapper with the same seed replays the
    same sequence."""
    image = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, image)
    d = {"file_name": path, "image_id": 1}

    def run(seed):
        mapper = UPDETRMapper(num_patches=4, patch_size=16, augmentation=[], seed=seed)
        return [mapper(d) for _ in range(3)]

    first = run(0)
    boxes = [out["patch_boxes"] for out in first]
    assert not torch.equal(boxes[0], boxes[1]) and not torch.equal(boxes[1], boxes[2])
    assert not torch.equal(first[0]["patches"], first[1]["patches"])
    for k, got in enumerate(boxes):
        expected = random_patch_boxes(np.random.default_rng(np.random.SeedSequence([0, 0, 0, k])), 60, 90, 4)
        assert torch.equal(got, torch.as_tensor(expected, dtype=torch.float32)), k
    for a, b in zip(first, run(0)):
        assert torch.equal(a["patch_boxes"], b["patch_boxes"]) and torch.equal(a["patches"], b["patches"])
    assert not torch.equal(run(1)[0]["patch_boxes"], boxes[0])  # another seed, another stream


def test_default_augmentation_is_the_official_resize_without_flip():
    """Official UP-DETR ``make_self_det_transforms('train')``: RandomResize(scales, max_size=600) only ("HorizontalFlip
    may cause the pretext too difficult"), scales 320..480 without 384."""
    from siamese_detr.data.up_detr_mapper import UP_DETR_SCALES, up_detr_augmentation

    scales = [320, 336, 352, 368, 400, 416, 432, 448, 464, 480]
    assert list(UP_DETR_SCALES) == scales
    for augs in (up_detr_augmentation(), UPDETRMapper().augmentation.augs):
        assert len(augs) == 1 and not any(isinstance(a, T.RandomFlip) for a in augs)
        (resize,) = augs
        assert isinstance(resize, T.ResizeShortestEdge) and not resize.is_range
        assert list(resize.short_edge_length) == scales and resize.max_size == 600
