"""UP-DETR pretraining meta-architecture (Dai et al., "Unsupervised Pre-training for Detection Transformers",
arXiv 2011.09094, the extended version of the CVPR 2021 paper, whose section / equation numbers are cited
here: §3, Eq. 1-3; official github dddzg/up-detr ``models/updetr.py``, commit 44c0c6eb), on the project's
variant-agnostic ``DETR``.

* Single view. ``n`` random query patches per image (``UPDETRMapper``: sizes / positions as the official
  ``datasets/selfdet.py``), each resized to 128 x 128 with SimCLR augmentation by the mapper, encoded by the
  FROZEN backbone (``no_grad``, eval mode; the official pretraining runs ``--fre_cnn``, backbone lr 0) and
  global-average pooled: p ``[B, n, C]`` (``in_features`` levels concatenated, as the Siamese crops).
* Query patches: ``region_proj(p)`` (official ``patch2query``; the name matches Siamese DETR's ``proj(z)``,
  same role) repeated ``Q / n`` times per patch, each query's patch feature zeroed with probability
  ``mask_ratio`` (official "feature masking", 0.1, no rescaling), plus the learned object queries; for
  Deformable the patch feature enters the positional half (see ``region_conditioned_queries``).
* Decoder self-attention restricted to queries of the same patch (``group_attention_mask``; correct for any
  ``n`` dividing ``Q``, the official loop only for ``n <= Q / n``).
* Losses (official ``SetCriterion`` with ``losses = labels, boxes, feature``): the variant's class loss on
  objectness (1 class + no-object for softmax CE, eos 0.1; the official head has 3 logits, ``num_classes=2``
  with every label 1: equal to ours only while its never-used class-0 logit is -inf, otherwise that logit
  takes softmax mass and adds to the official CE, e.g. 1.689 vs 0.904 on the parity fixture at a random
  init, ``tests/test_parity_up_detr_pretrain.py``), L1 5, GIoU 2, and the
  feature reconstruction ``sum_matched ||norm(sem_embed(q)) - norm(p)||^2 / num_boxes`` (official
  ``loss_feature``, weight 1; ``sem_embed`` = official ``feature_align``, named as Siamese DETR's f_sem),
  all with auxiliary copies for every earlier decoder layer.

In eval mode it is ``DETR`` with one class and the learned object queries alone.
"""

from typing import Dict, List

import torch
from torch import nn

from ..criterion import weight_losses
from ..heads import MLP
from ..pretext.losses import region_discrimination_loss
from ..pretext.query_groups import group_attention_mask, query_feature_dropout
from ..pretext.region_features import concatenated_average_pool, region_conditioned_queries
from .pretext_detr import PretextDETR
from ...utils.user_errors import UserValueError

__all__ = ["UPDETRPretrain"]


class UPDETRPretrain(PretextDETR):
    """UP-DETR random-query-patch detection on any DETR variant with learned object queries.

    Args:
        backbone: frozen.
        criterion: ``SetCriterion`` with ``num_classes=1``.
        weight_dict: ``loss_ce``, ``loss_bbox``, ``loss_giou`` and (with ``feature_recon``) ``loss_feature``.
        num_queries: ``Q``, a multiple of ``num_patches``.
        num_patches: ``n`` query patches per image (official default 10).
        mask_ratio: probability of zeroing a query's patch feature in training (official 0.1).
        feature_recon: add the feature reconstruction branch and loss (official ``--feature_recon``).
        detr_kwargs: the other arguments of ``DETR`` (``position_embedding``, ``transformer``, ``in_features``,
            ``num_extra_levels``, ``input_proj_norm``, ``aux_loss`` (auxiliary decoder-layer losses, also for
            the feature loss, as the official), ``postprocess``, pixel statistics, ``input_format``,
            ``allow_random_backbone``).
    """

    def __init__(
        self,
        *,
        num_queries: int = 100,
        num_patches: int = 10,
        mask_ratio: float = 0.1,
        feature_recon: bool = True,
        **detr_kwargs,
    ):
        if num_patches < 1 or num_queries % num_patches != 0:
            raise UserValueError(f"model.num_queries ({num_queries}) must be a positive multiple of model.num_patches "
                                 f"({num_patches})")
        losses = ("loss_ce", "loss_bbox", "loss_giou") + (("loss_feature",) if feature_recon else ())
        super().__init__(num_queries=num_queries, required_losses=losses, **detr_kwargs)
        shapes = self.backbone.output_shape()
        channels = sum(shapes[f].channels for f in self.in_features)
        d_model = self.transformer.d_model
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
            raise UserValueError("UPDETRPretrain got an empty batch")
        for x in batched_inputs:
            if "patches" not in x or "patch_boxes" not in x:
                raise UserValueError(f"image {x.get('image_id')!r}: training expects UPDETRMapper outputs "
                                     f"('image', 'patches', 'patch_boxes')")
            n, m = x["patches"].shape[0], x["patch_boxes"].shape[0]
            if n != self.num_patches or m != n:
                raise UserValueError(f"image {x.get('image_id')!r}: {n} patches and {m} boxes, but the model "
                                     f"expects num_patches={self.num_patches} (set UPDETRMapper(num_patches=...) to "
                                     "the model's)")

    def patch_queries(self, patch_features: torch.Tensor) -> torch.Tensor:
        """Object queries ``[B, Q, query_dim]`` from patch features ``[B, n, C]``: ``region_proj``, each patch
        repeated ``Q / n`` times, feature dropout (training only), plus ``query_embed`` (UP-DETR §3.1
        "Multi-query Patches": patch ``k`` feeds queries ``k * Q / n .. (k + 1) * Q / n - 1``)."""
        repeated = self.region_proj(patch_features).repeat_interleave(self.num_queries // self.num_patches, dim=1)
        if self.training and self.mask_ratio > 0:
            repeated, _ = query_feature_dropout(repeated, self.mask_ratio)
        return region_conditioned_queries(repeated, self.query_embed.weight)

    def forward(self, batched_inputs: List[Dict]):
        """Training: ``UPDETRMapper`` outputs -> WEIGHTED losses. Eval: Detectron2 dicts with ``"image"`` ->
        class-agnostic ``[{"instances": Instances}]`` from the learned object queries alone.

        Each training input has ``image`` uint8 ``[3, H, W]``, ``patches`` uint8 ``[n, 3, S, S]`` and
        ``patch_boxes`` ``[n, 4]`` xyxy absolute pixels of ``image`` (targets). Returned: the terms of UP-DETR
        Eq. 1, ``loss_ce`` (L_cls), ``loss_bbox`` / ``loss_giou`` (L_box) and ``loss_feature`` (L_rec, Eq. 2; with
        ``feature_recon``), each times its ``weight_dict`` entry, with ``_i`` copies for the earlier decoder layers.
        """
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

        targets = self.objectness_targets([x["patch_boxes"] for x in batched_inputs], images.image_sizes)
        losses, indices = self.criterion(self.head_outputs(decoded), targets, return_indices=True)

        if self.feature_recon:
            num_boxes = self.criterion.get_num_boxes(targets, self.device)
            losses.update(self.layerwise_feature_losses(
                "loss_feature", region_discrimination_loss, decoded.hidden_states, patch_features, indices, num_boxes
            ))
        return weight_losses(losses, self.weight_dict)
