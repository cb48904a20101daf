"""UP-DETR pretraining meta-architecture (Dai et al., CVPR 2021, §3; official github dddzg/up-detr
``models/updetr.py``, commit 44c0c6eb), on the project's variant-agnostic ``DETR``.

* Single view. ``n`` random query patches per image (``UPDETRMapper``: sizes / positions as the official
  ``datasets/selfdet.py``), each resized to 128 x 128 with SimCLR augmentation by the mapper, encoded by the
  FROZEN backbone (``no_grad``, eval mode; the official pretraining runs ``--fre_cnn``, backbone lr 0) and
  global-average pooled: p ``[B, n, C]`` (``in_features`` levels concatenated, as the Siamese crops).
* Query patches: ``region_proj(p)`` (official ``patch2query``; the name matches Siamese DETR's ``proj(z)``,
  same role) repeated ``Q / n`` times per patch, each query's patch feature zeroed with probability
  ``mask_ratio`` (official "feature masking", 0.1, no rescaling), plus the learned object queries; for
  Deformable the patch feature enters the positional half (see ``region_conditioned_queries``).
* Decoder self-attention restricted to queries of the same patch (``group_attention_mask``; correct for any
  ``n`` dividing ``Q``, the official loop only for ``n = Q / n``).
* Losses (official ``SetCriterion`` with ``losses = labels, boxes, feature``): the variant's class loss on
  objectness (1 class + no-object for softmax CE, eos 0.1; the official head has 3 logits, ``num_classes=2``
  with every label 1 — the never-used class changes nothing but the head width), L1 5, GIoU 2, and the
  feature reconstruction ``sum_matched ||norm(sem_embed(q)) - norm(p)||^2 / num_boxes`` (official
  ``loss_feature``, weight 1; ``sem_embed`` = official ``feature_align``, named as Siamese DETR's f_sem),
  all with auxiliary copies for every earlier decoder layer.

In eval mode it is ``DETR`` with one class and the learned object queries alone.
"""

from typing import Dict, List, Sequence

import torch
from torch import nn
from torchvision.ops import box_convert

from ..criterion import weight_losses
from ..heads import MLP
from ..pretext.losses import region_discrimination_loss
from ..pretext.query_groups import group_attention_mask, query_feature_dropout
from ..pretext.region_features import concatenated_average_pool, region_conditioned_queries
from .detr import DETR

__all__ = ["UPDETRPretrain"]


class UPDETRPretrain(DETR):
    """UP-DETR random-query-patch detection on any DETR variant with learned object queries.

    Args:
        backbone, position_embedding, transformer, in_features, num_extra_levels, input_proj_norm,
        postprocess, pixel_mean, pixel_std, input_format, allow_random_backbone: as ``DETR`` (the backbone
            is frozen).
        criterion: ``SetCriterion`` with ``num_classes=1``.
        num_queries: ``Q``, a multiple of ``num_patches``.
        num_patches: ``n`` query patches per image (official default 10).
        weight_dict: ``loss_ce``, ``loss_bbox``, ``loss_giou`` and (with ``feature_recon``) ``loss_feature``.
        mask_ratio: probability of zeroing a query's patch feature in training (official 0.1).
        feature_recon: add the feature reconstruction branch and loss (official ``--feature_recon``).
        aux_loss: auxiliary decoder-layer losses (also for the feature loss, as the official).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        position_embedding: nn.Module,
        transformer: nn.Module,
        criterion: nn.Module,
        weight_dict: Dict[str, float],
        num_queries: int = 100,
        num_patches: int = 10,
        mask_ratio: float = 0.1,
        feature_recon: bool = True,
        aux_loss: bool = True,
        in_features=("res5",),
        num_extra_levels: int = 0,
        input_proj_norm: bool = False,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
        input_format: str = "BGR",
        postprocess: nn.Module = None,
        allow_random_backbone: bool = False,
    ):
        if num_patches < 1 or num_queries % num_patches != 0:
            raise ValueError(f"num_queries ({num_queries}) must be a positive multiple of num_patches ({num_patches})")
        if not getattr(transformer, "learned_queries", True):
            raise ValueError("UP-DETR pretraining needs learned object queries: turn two-stage off")
        if getattr(criterion, "num_classes", 1) != 1:
            raise ValueError(f"the pretext criterion must have num_classes=1 (objectness), got {criterion.num_classes}")
        required = {"loss_ce", "loss_bbox", "loss_giou"} | ({"loss_feature"} if feature_recon else set())
        if required - set(weight_dict):
            raise ValueError(f"weight_dict lacks {sorted(required - set(weight_dict))}")
        super().__init__(
            backbone=backbone, position_embedding=position_embedding, transformer=transformer, num_classes=1,
            num_queries=num_queries, criterion=criterion, weight_dict=weight_dict, in_features=in_features,
            num_extra_levels=num_extra_levels, input_proj_norm=input_proj_norm, aux_loss=aux_loss,
            postprocess=postprocess, pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format,
            frozen_modules=("backbone",), allow_random_backbone=allow_random_backbone,
        )
        shapes = backbone.output_shape()
        channels = sum(shapes[f].channels for f in self.in_features)
        d_model = transformer.d_model
        self.region_proj = nn.Linear(channels, d_model)  # official patch2query
        self.sem_embed = MLP(d_model, d_model, channels, 2) if feature_recon else None  # official feature_align
        self.num_patches = num_patches
        self.mask_ratio = float(mask_ratio)
        self.feature_recon = feature_recon
        self.register_buffer(
            "attention_mask", group_attention_mask(num_queries, num_patches), persistent=False
        )  # bool [Q, Q], True = blocked

    def _check_inputs(self, batched_inputs: List[Dict]) -> None:
        if not batched_inputs:
            raise ValueError("UPDETRPretrain got an empty batch")
        for x in batched_inputs:
            if "patches" not in x or "patch_boxes" not in x:
                raise ValueError(f"image {x.get('image_id')!r}: training expects UPDETRMapper outputs "
                                 f"('image', 'patches', 'patch_boxes')")
            n, m = x["patches"].shape[0], x["patch_boxes"].shape[0]
            if n != self.num_patches or m != n:
                raise ValueError(f"image {x.get('image_id')!r}: {n} patches and {m} boxes, but the model expects "
                                 f"num_patches={self.num_patches} (set UPDETRMapper(num_patches=...) to the model's)")

    def patch_queries(self, patch_features: torch.Tensor) -> torch.Tensor:
        """Object queries ``[B, Q, query_dim]`` from patch features ``[B, n, C]``: ``region_proj``, each patch
        repeated ``Q / n`` times, feature dropout (training only), plus ``query_embed``."""
        repeated = self.region_proj(patch_features).repeat_interleave(self.num_queries // self.num_patches, dim=1)
        if self.training and self.mask_ratio > 0:
            repeated, _ = query_feature_dropout(repeated, self.mask_ratio)
        return region_conditioned_queries(repeated, self.query_embed.weight)

    def forward(self, batched_inputs: List[Dict]):
        """Training: ``UPDETRMapper`` outputs -> WEIGHTED losses. Eval: Detectron2 dicts with ``"image"`` ->
        class-agnostic ``[{"instances": Instances}]`` from the learned object queries alone."""
        if not self.training:
            return super().forward(batched_inputs)
        self._check_inputs(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        _, memory = self.encode(images)
        batch, n = len(batched_inputs), self.num_patches
        with torch.no_grad():  # p: all patches of the batch in one frozen-backbone call, [B, n, C]
            patches = self.normalize(torch.cat([x["patches"] for x in batched_inputs]))
            patch_features = concatenated_average_pool(self.backbone_features(patches)).view(batch, n, -1)
        decoded = self.decode(memory, self.patch_queries(patch_features), self_attn_mask=self.attention_mask)

        targets = []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = x["patch_boxes"].to(self.device).float() / scale
            targets.append({"labels": torch.zeros(n, dtype=torch.int64, device=self.device),
                            "boxes": box_convert(boxes, "xyxy", "cxcywh")})
        losses, indices = self.criterion(self.head_outputs(decoded), targets, return_indices=True)

        if self.feature_recon:
            num_boxes = self.criterion.get_num_boxes(targets, self.device)
            hs = decoded.hidden_states
            semantic = self.sem_embed(hs if self.aux_loss else hs[-1:])
            for layer, layer_indices in enumerate(indices):
                name = "loss_feature" if layer == len(indices) - 1 else f"loss_feature_{layer}"
                losses[name] = region_discrimination_loss(semantic[layer], patch_features, layer_indices, num_boxes)
        return weight_losses(losses, self.weight_dict)
