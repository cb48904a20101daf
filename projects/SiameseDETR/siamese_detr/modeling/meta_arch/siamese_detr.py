"""Siamese DETR pretraining meta-architecture (Chen et al., CVPR 2023, §3.3, Eq. 4-13).

Reading of the paper used here (checked against the supplementary and the official code):

* Frozen backbone h = B(x) for both views (Eq. 4 input) and all region crops (Eq. 5), under ``no_grad``
  and in eval mode. All 2B views of a batch go through the backbone in ONE call (one padded
  ``ImageList``, view-major: row ``v * B + b`` is view ``v`` of image ``b``), all ``2 B n`` crops in a
  second call. Padding is masked everywhere (positional encoding, attention, global pooling), so
  padding views to a common size changes nothing but speed.
* z = avgpool(RoIAlign(h, b~)) with the JITTERED query boxes b~ (Eq. 4);
  p = avgpool(B(Crop(x, b))) of the crops of the UNJITTERED region boxes (Eq. 5). Both use the model's
  ``in_features`` levels, concatenated when there are several (multi-scale Deformable DETR: C3-C5, 3584
  channels for an R50, as the official Deform-MS).
* Multi-View Cross-Attention (Eq. 6-7): object queries = region_proj(z_v) (each region repeated
  ``num_queries / n`` times) + learned ``query_embed`` (phi_q), entering each variant the way its learned
  queries do (Vanilla: query_pos with ``tgt = 0``; Conditional: query_pos, so the reference points come
  from the region query; Deformable: the positional half, see ``region_conditioned_queries``), always per
  image; the queries of view v decode the encoder memory c of the OTHER view. Both directions run as one
  decoder pass over a batch of 2B: ``[queries(view 1) vs memory(view 2) ; queries(view 2) vs memory(view 1)]``;
  all weights shared.
* Heads on q_hat: ``bbox_embed`` (f_box, Eq. 8) -> boxes in the other view, cxcywh normalised by that
  view's unpadded size; ``class_embed`` objectness (the finetuning model's class loss: 1 class + no-object
  with softmax CE in ``configs/siamese_detr/``, one sigmoid focal logit in the demo's Deformable DETR);
  ``sem_embed`` (f_sem, Eq. 10) -> p_hat with the backbone's channel width.
* L_loc (Eq. 9): Hungarian matching (supplementary §A.2, Eq. 5) + objectness / L1 / GIoU (``SetCriterion``
  with ``num_classes=1``) against the other view's region boxes; all n regions are targets with label 0.
* L_r (Eq. 12) = D(p_hat_2, p_1) + D(p_hat_1, p_2): p_hat_2 = f_sem(q_hat_2) comes from the queries BUILT
  FROM VIEW 1 (decoding view 2), and its target is p_1, the crop feature of the query's OWN view — the
  official code reconstructs ``recon_v1_gt`` from the outputs of the view-1 queries. A query matched to
  region j is compared with crop j. D = squared L2 distance of L2-normalised vectors, matched queries only.
* L_g (Eq. 11; the paper's ``C[MLP(c1), detach(c2)]`` in the SimSiam form of the official head):
  symmetric negative cosine of the predictor output and the stop-gradient projector output of the
  global context of each view's encoder memory: the masked (non-padded) average of each of the first
  k = min(3, L) levels, concatenated (``[2B, k * d_model]``; multi-scale Deformable: C3-C5, the extra
  stride-64 level left out, as the official Deform-MS ``NonLinearNeckV3(in_channels=256 * 3)``, ``x[:3]``;
  single-level variants: k = 1); projector and predictor run once on both views with batch-norm
  statistics computed per view (official ``siamdetr_head.py`` calls them once per view).
* L = λ0 L_r + λ1 L_g + λ2 L_loc (Eq. 13), λ2 = 1 folded into the objectness / L1 / GIoU weights (CE 1 /
  L1 5 / GIoU 2 in ``configs/siamese_detr/``). L_loc and L_r get auxiliary copies for every earlier decoder
  layer (``_i`` suffix, same base weight); L_g does not.
  As in the official code the two directions are AVERAGED (one normaliser over the 2B rows), i.e. Eq. 9
  and 12 up to a factor 2 absorbed in the weights.

Defaults of λ0 / λ1 (``weight_dict["loss_region"]`` / ``["loss_global"]``) live in the configs:
ImageNet-like data 3 / 10 (supplementary §B; the official Deformable ImageNet configs; the official
Conditional DETR ImageNet config has λ0 = 5, and so has ours); COCO-like data 3 / 0.3
(official COCO configs; the supplementary text says 0.3 / 3 — we follow the released code).
"""

from typing import Dict, List

import torch
from detectron2.utils import comm
from torch import nn

from ..criterion import weight_losses
from ..heads import MLP
from ..pretext.losses import global_discrimination_loss, region_discrimination_loss
from ..pretext.region_features import (
    average_pooled_roi_features,
    concatenated_average_pool,
    masked_average_pool,
    per_level_average_pool,
    region_conditioned_queries,
)
from ..pretext.simsiam import SimSiamPredictor, SimSiamProjector
from .pretext_detr import PretextDETR
from ...utils.user_errors import UserValueError

__all__ = ["SiameseDETRPretrain"]


class SiameseDETRPretrain(PretextDETR):
    """Siamese DETR pretraining model: the finetune ``DETR`` (objectness head, frozen backbone) plus the
    pretext heads, so that a pretraining checkpoint loads into ``DETR`` through ``train.init_checkpoint``
    (class head skipped for its shape, pretext heads reported unused).

    Args:
        backbone: Detectron2 backbone (e.g. ``ResNet``), frozen here (``no_grad``, eval mode).
        position_embedding: ``mask [B, H, W] -> [B, d_model, H, W]``.
        transformer: any DETR-variant transformer (``modeling/transformers/base.py`` interface) that uses
            learned object queries (not two-stage).
        criterion: ``SetCriterion`` with ``num_classes=1`` (objectness) returning unweighted losses.
        num_queries: Q learned object queries; must be a multiple of ``num_regions``.
        num_regions: n regions per view delivered by ``SiameseViewMapper(num_regions=n)``.
        weight_dict: base loss weights: ``loss_ce``, ``loss_bbox``, ``loss_giou`` (λ2 = 1 folded in),
            ``loss_region`` (λ0), ``loss_global`` (λ1); aux copies ``_i`` use the base weight.
        projection_dim, predictor_hidden_dim: SimSiam widths (projector k * d_model -> projection_dim ->
            projection_dim, predictor projection_dim -> predictor_hidden_dim -> projection_dim).
        global_context_levels: L_g's context uses the first ``k = min(global_context_levels, L)`` of the
            model's L feature levels (finest first), each averaged over its non-padded tokens, concatenated
            (``k * d_model`` wide). 3 (default) is the official Deform-MS (``r50_deformtr_ms_300q_*``: the
            global head ``NonLinearNeckV3(in_channels=256 * len(strides))`` pools ``x[:3]``, C3-C5 of the
            encoder memory, without the extra stride-64 level); single-level models have k = 1.
        roi_output_size: RoIAlign grid for z (7).
        roi_aligned: torchvision ``roi_align(aligned=...)`` for z. False (default) is the official code's
            (torchvision's default, ``RoIAlign(7, 1/32, -1)``), which samples half a feature cell (s/2 pixels)
            down-right of the box; True samples half-pixel-correctly (pixel ``u`` is feature coordinate
            ``u / s - 0.5``).
        detr_kwargs: the other arguments of ``DETR``: ``aux_loss`` (auxiliary decoder-layer terms for L_loc
            and L_r), ``in_features`` / ``num_extra_levels`` / ``input_proj_norm`` (region and crop features
            concatenate the ``in_features`` levels), ``postprocess``, pixel statistics, ``input_format``,
            ``allow_random_backbone`` (the frozen backbone may start without ``train.init_checkpoint``: only
            for the CPU demo; a real run against random features learns nothing useful).

    In eval mode it is ``DETR`` with one class: class-agnostic detections from the learned object queries
    alone (z = 0), as a finetune DETR initialised from this checkpoint runs before finetuning.
    """

    def __init__(
        self,
        *,
        num_queries: int = 100,
        num_regions: int = 10,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 256,
        roi_output_size: int = 7,
        roi_aligned: bool = False,
        global_context_levels: int = 3,
        **detr_kwargs,
    ):
        if num_regions < 2:
            raise UserValueError(f"model.num_regions must be >= 2 (SiameseViewMapper's region 0 is the views' overlap, "
                                 f"the others come from proposals), got {num_regions}")
        if num_queries % num_regions != 0:
            raise UserValueError(
                f"model.num_queries ({num_queries}) must be a positive multiple of model.num_regions ({num_regions}): "
                f"every region is repeated num_queries / num_regions times"
            )
        if global_context_levels < 1:
            raise UserValueError(f"model.global_context_levels must be >= 1, got {global_context_levels}")
        super().__init__(
            num_queries=num_queries,
            required_losses=("loss_ce", "loss_bbox", "loss_giou", "loss_region", "loss_global"),
            **detr_kwargs,
        )
        d_model = self.transformer.d_model
        shapes = self.backbone.output_shape()
        channels = sum(shapes[f].channels for f in self.in_features)
        # pretext-only heads
        self.region_proj = nn.Linear(channels, d_model)  # proj(z) of Eq. 7
        self.sem_embed = MLP(d_model, d_model, channels, 2)  # f_sem of Eq. 10
        # L_g context: the first k levels (input_proj holds one projection per level)
        self.global_context_levels = min(int(global_context_levels), len(self.input_proj))
        self.projector = SimSiamProjector(self.global_context_levels * d_model, projection_dim, projection_dim)
        self.predictor = SimSiamPredictor(projection_dim, predictor_hidden_dim, projection_dim)
        self.num_regions = num_regions
        self.roi_output_size = roi_output_size
        self.roi_aligned = bool(roi_aligned)

    def _check_pretrain_inputs(self, batched_inputs: List[Dict]) -> None:
        if len(batched_inputs) == 0:
            raise UserValueError("SiameseDETRPretrain got an empty batch")
        for x in batched_inputs:
            if "views" not in x or len(x["views"]) != 2:
                raise UserValueError(
                    f"image {x.get('image_id')!r}: training expects SiameseViewMapper outputs "
                    f"with two 'views'"
                )
            for view in x["views"]:
                n = view["region_boxes"].shape[0]
                if n == 0:
                    raise UserValueError(
                        f"image {x.get('image_id')!r} has no regions; the mapper must emit {self.num_regions}"
                    )
                if n != self.num_regions or view["query_boxes"].shape[0] != n or view["crops"].shape[0] != n:
                    raise UserValueError(
                        f"image {x.get('image_id')!r}: {n} region boxes, "
                        f"{view['query_boxes'].shape[0]} query boxes, {view['crops'].shape[0]} crops, "
                        f"but the model expects num_regions={self.num_regions} (set "
                        f"SiameseViewMapper(num_regions=...) to the model's; it pads with jittered copies "
                        f"when fewer proposals are available)"
                    )
        if len(batched_inputs) == 1 and comm.get_world_size() == 1:
            raise UserValueError(
                "SiameseDETRPretrain got a batch of 1 image in a single process: the SimSiam heads' batch norm "
                "(statistics per view, as the official code) needs at least 2 images per view. Use "
                "dataloader.train.total_batch_size >= 2 (or several processes, whose batch norm is synchronised)."
            )

    # ------------------------------------------------------------------------------------------- forward
    def region_features(self, features: List[torch.Tensor], query_boxes: List[torch.Tensor]) -> torch.Tensor:
        """z of Eq. 4: ``avgpool(RoIAlign(h, b~))`` of each view's n jittered query boxes (xyxy, absolute pixels
        of the padded batch), the ``in_features`` levels concatenated: ``[N views, n, C]``.

        Args:
            features: backbone levels ``[N, C_l, H_l, W_l]`` of the N padded views (:meth:`backbone_features`).
            query_boxes: N tensors ``[n, 4]``, one per view, in the row order of ``features``.
        """
        z = average_pooled_roi_features(
            features, query_boxes, self.feature_strides, self.roi_output_size, aligned=self.roi_aligned
        )
        return z.view(len(query_boxes), self.num_regions, -1)

    @torch.no_grad()
    def view_region_embeddings(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """``proj(z)`` of every view's regions, as :meth:`forward` adds them to the object queries (Eq. 7),
        from ``SiameseViewMapper`` outputs (image fields only): ``[2B, n, d_model]``, view-major. Runs only the
        frozen backbone, RoIAlign and ``region_proj`` (see ``tools/fold_region_queries.py``)."""
        self._check_pretrain_inputs(batched_inputs)
        views = [x["views"][v] for v in (0, 1) for x in batched_inputs]
        images = self.pad_images([view["image"] for view in views])
        features = self.backbone_features(images.tensor)
        return self.region_proj(self.region_features(features, [view["query_boxes"] for view in views]))

    def forward(self, batched_inputs: List[Dict]):
        """Training: ``batched_inputs`` are ``SiameseViewMapper`` outputs; returns WEIGHTED losses.
        Eval: Detectron2 dicts with ``"image"``; returns class-agnostic ``[{"instances": Instances}]``.

        Each training input has ``"views"``: two dicts with ``image`` uint8 ``[3, Hv, Wv]``, ``region_boxes``
        ``[n, 4]`` (targets b_v), ``query_boxes`` ``[n, 4]`` (jittered, for z) and ``crops`` uint8
        ``[n, 3, S, S]`` (for p); boxes xyxy absolute in that view's pixels, row k the same region in both views.
        Returned: the terms of Eq. 13, each times its ``weight_dict`` entry: ``loss_ce`` / ``loss_bbox`` /
        ``loss_giou`` = L_loc (Eq. 9) and ``loss_region`` = L_r (Eq. 12), each with ``_i`` copies for the
        earlier decoder layers, and ``loss_global`` = L_g (Eq. 11).
        """
        if not self.training:
            if not batched_inputs or any("image" not in x for x in batched_inputs):
                raise UserValueError("SiameseDETRPretrain in eval mode expects a non-empty list of Detectron2 "
                                     "dicts with 'image' (e.g. from DetrDatasetMapper(is_train=False))")
            return super().forward(batched_inputs)
        self._check_pretrain_inputs(batched_inputs)
        batch, n = len(batched_inputs), self.num_regions
        views = [x["views"][v] for v in (0, 1) for x in batched_inputs]  # view-major, 2B entries
        images = self.pad_images([view["image"] for view in views])
        features, memory = self.encode(images)

        with torch.no_grad():
            # z (Eq. 4): [2B, n, C]; p (Eq. 5): all crops of the batch in one backbone call, [2B, n, C]
            z = self.region_features(features, [view["query_boxes"] for view in views])
            crops = self.normalize(torch.cat([view["crops"] for view in views]))
            crop_features = concatenated_average_pool(self.backbone_features(crops)).view(2 * batch, n, -1)

        # Multi-View Cross-Attention (Eq. 6-7), both directions in one decoder pass, per-image queries
        other = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(self.device)
        queries = region_conditioned_queries(self.region_proj(z), self.query_embed.weight)  # [2B, Q, query_dim]
        decoded = self.decode(memory.select(other), queries)  # hidden_states [L, 2B, Q, D]

        # L_loc (Eq. 9): targets are the OTHER view's region boxes
        other_views = other.tolist()
        targets = self.objectness_targets(
            [views[i]["region_boxes"] for i in other_views], [images.image_sizes[i] for i in other_views]
        )
        losses, indices = self.criterion(self.head_outputs(decoded), targets, return_indices=True)

        # L_r (Eq. 12): f_sem of queries of view v vs crop features of view v, per decoder layer
        num_boxes = self.criterion.get_num_boxes(targets, self.device)
        losses.update(self.layerwise_feature_losses(
            "loss_region", region_discrimination_loss, decoded.hidden_states, crop_features, indices, num_boxes
        ))

        # L_g (Eq. 11) on the per-level masked averages of each view's encoder memory (first k levels)
        # rows are view-major: batch-norm statistics per view, as two separate calls (official head)
        # (pool given by its name in this module: the parity test swaps in the official padded pooling)
        context = per_level_average_pool(memory, self.global_context_levels, pool=masked_average_pool)
        projection = self.projector(context, num_views=2)  # [2B, k * d_model] -> [2B, projection_dim]
        prediction = self.predictor(projection, num_views=2)
        losses["loss_global"] = global_discrimination_loss(
            prediction[:batch], projection[:batch], prediction[batch:], projection[batch:]
        )
        return weight_losses(losses, self.weight_dict)
