"""DETReg pretraining meta-architecture (Bar et al., CVPR 2022; section / equation / table numbers of the
arXiv 2106.04550v1 text: §4-5, Eq. 3-4; official github
amirbar/DETReg ``models/deformable_detr.py``, ``engine.py``, ``main.py``, commit a4b63635), on the project's
variant-agnostic ``DETR``.

* Single view; targets are the (up to) K proposals chosen by ``DETRegMapper`` (top-k / random-k / importance
  sampling of a proposal store or online Selective Search), boxes moved with the image augmentation.
* Object localisation: the variant's class loss on objectness (1 class; softmax CE + no-object for Vanilla,
  sigmoid focal for Conditional / Deformable — the official run is Deformable DETR with focal loss, its head
  has 91 logits with every label 1: equal to ours only while the never-used logits are -inf, otherwise each
  adds a negative focal term to the official loss and its gradient to the decoder;
  ``tests/test_parity_detreg_pretrain.py``), L1 5, GIoU 2, with
  auxiliary decoder layers (and ``_enc`` for two-stage when the criterion handles it).
* Object embedding: ``sem_embed`` (official ``feature_embed``: ``MLP(d, d, C_emb, 2)`` on the LAST decoder
  layer only) of the matched queries regresses z, the global average of the frozen backbone's
  ``embedding_feature`` level on the 128 x 128 crop of each proposal; L1 with ``reduction="mean"``, weight 1
  (``--object_embedding_loss``, ``object_embedding_coef`` 1; auxiliary layers skipped as the official).
  Official default (``--obj_embedding_head intermediate``): ``build_swav_backbone_old`` returns
  ``model(x)['0'].mean((2, 3))``, the first returned level of the multi-scale backbone = ``layer2`` (C3,
  512 channels = ``2 * hidden_dim``) of the frozen SwAV ResNet-50 — here ``embedding_feature="res3"`` of the
  model's own frozen backbone (same weights: the official SwAV copy and the DETR backbone are both the frozen
  SwAV R50 in pretraining, ``--lr_backbone 0``).

In eval mode it is ``DETR`` with one class (class-agnostic detection, paper Table 6).
"""

from typing import Dict, List

import torch

from ..criterion import weight_losses
from ..heads import MLP
from ..pretext.embedding_loss import object_embedding_loss
from .pretext_detr import PretextDETR
from ...utils.user_errors import UserValueError

__all__ = ["DETRegPretrain"]


class DETRegPretrain(PretextDETR):
    """DETReg on any DETR variant (learned or two-stage queries).

    Args:
        backbone: frozen; must output ``embedding_feature`` besides ``in_features`` (configs add ``res3`` to
            ``out_features``).
        criterion: ``SetCriterion`` with ``num_classes=1``.
        weight_dict: ``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_object_embedding``.
        num_queries: ``Q`` object queries, at least the number of proposals per image.
        embedding_feature: backbone level whose average over each proposal crop is the embedding target z
            (official default C3 = ``res3``).
        detr_kwargs: the other arguments of ``DETR`` (``position_embedding``, ``transformer``, ``in_features``,
            ``num_extra_levels``, ``input_proj_norm``, ``aux_loss``, ``postprocess``, pixel statistics,
            ``input_format``, ``allow_random_backbone``).
    """

    def __init__(self, *, num_queries: int = 100, embedding_feature: str = "res3", **detr_kwargs):
        super().__init__(
            num_queries=num_queries,
            required_losses=("loss_ce", "loss_bbox", "loss_giou", "loss_object_embedding"),
            learned_queries_only=False,
            **detr_kwargs,
        )
        shapes = self.backbone.output_shape()
        if embedding_feature not in shapes:
            raise UserValueError(f"model.embedding_feature {embedding_feature!r} is not a backbone output "
                                 f"{sorted(shapes)}: add it to model.backbone.out_features")
        d_model = self.transformer.d_model
        self.embedding_feature = embedding_feature
        self.sem_embed = MLP(d_model, d_model, shapes[embedding_feature].channels, 2)  # official feature_embed

    def _check_inputs(self, batched_inputs: List[Dict]) -> None:
        if not batched_inputs:
            raise UserValueError("DETRegPretrain got an empty batch")
        for x in batched_inputs:
            if "proposal_boxes" not in x or "crops" not in x:
                raise UserValueError(f"image {x.get('image_id')!r}: training expects DETRegMapper outputs "
                                     f"('image', 'proposal_boxes', 'crops')")
            k, c = x["proposal_boxes"].shape[0], x["crops"].shape[0]
            if k != c or k == 0:
                raise UserValueError(f"image {x.get('image_id')!r}: {k} proposal boxes and {c} crops "
                                     "(need the same, > 0)")
            if k > self.num_queries:
                raise UserValueError(f"image {x.get('image_id')!r}: {k} proposals for {self.num_queries} queries: "
                                     f"lower dataloader.train.mapper.num_proposals, or with policy='importance' "
                                     f"(a random count) set dataloader.train.mapper.max_sampled <= {self.num_queries}")

    def crop_embeddings(self, crops: List[torch.Tensor]) -> List[torch.Tensor]:
        """z: ``[n_b, C_emb]`` per image from uint8 crops ``[n_b, 3, S, S]`` (one frozen-backbone call): the
        object descriptors ``z_i`` of DETReg §5 "Object Embedding Task"."""
        with torch.no_grad():
            out = self.backbone(self.normalize(torch.cat(crops)))[self.embedding_feature].mean(dim=(2, 3))
        return list(out.split([len(c) for c in crops]))

    def forward(self, batched_inputs: List[Dict]):
        """Training: ``DETRegMapper`` outputs -> WEIGHTED losses. Eval: Detectron2 dicts with ``"image"`` ->
        class-agnostic ``[{"instances": Instances}]``.

        Each training input has ``image`` uint8 ``[3, H, W]``, ``proposal_boxes`` ``[K, 4]`` xyxy absolute
        pixels of ``image`` (targets) and ``crops`` uint8 ``[K, 3, S, S]`` (row k the crop of box k). Returned:
        the terms of DETReg Eq. 3, ``loss_ce`` (L_focal, or CE for Vanilla), ``loss_bbox`` / ``loss_giou``
        (L_box), these three with ``_i`` copies for the earlier decoder layers (and ``_enc`` in two-stage mode),
        and ``loss_object_embedding`` (L_emb, Eq. 4, last layer only), each times its ``weight_dict`` entry.
        """
        if not self.training:
            return super().forward(batched_inputs)
        self._check_inputs(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        _, memory = self.encode(images)
        decoded = self.decode(memory, self.object_queries(len(images)))
        outputs = self.head_outputs(decoded)

        targets = self.objectness_targets([x["proposal_boxes"] for x in batched_inputs], images.image_sizes)
        losses, indices = self.criterion(outputs, targets, return_indices=True)
        embeddings = self.crop_embeddings([x["crops"] for x in batched_inputs])
        predicted = self.sem_embed(decoded.hidden_states[-1])  # [B, Q, C_emb], last layer only (official)
        losses["loss_object_embedding"] = object_embedding_loss(predicted, embeddings, indices[-1])
        return weight_losses(losses, self.weight_dict)
