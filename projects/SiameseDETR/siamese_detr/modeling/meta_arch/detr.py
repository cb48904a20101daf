"""DETR finetuning meta-architecture for detectron2 (Carion et al. 2020), variant-agnostic.

Everything variant-specific lives in the ``transformer`` (Vanilla, Conditional or Deformable DETR, see
:mod:`siamese_detr.modeling.transformers.base` for the interface), the criterion (softmax or focal class
loss) and the ``postprocess`` rule; attribute names are shared with the pretraining meta-architectures so
their checkpoints load here without conversion.
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from ..backbone import feature_padding_mask
from ..criterion import weight_losses
from ..heads import MLP
from ..hybrid_matching import group_self_attn_mask, repeat_targets, split_query_groups
from ..postprocess import SigmoidTopKPostProcess, SoftmaxArgmaxPostProcess
from ..transformers.base import DecoderOutput, EncoderMemory
from ...utils.user_errors import UserValueError

__all__ = ["DETR", "build_input_proj", "set_target"]


def build_input_proj(
    in_channels: Sequence[int], d_model: int, num_extra_levels: int = 0, group_norm: bool = False
) -> nn.ModuleList:
    """Projections of the backbone levels to ``d_model`` channels (``input_proj``).

    Entry ``l < len(in_channels)`` is ``Sequential(Conv2d(C_l, d_model, 1) [, GroupNorm(32, d_model)])``; each
    extra level (Deformable DETR's stride-64 level) is ``Sequential(Conv2d(C, d_model, 3, stride=2,
    padding=1) [, GroupNorm])``, the first applied to the LAST backbone level's raw features, later ones to
    the previous extra level (official Deformable DETR). With ``group_norm`` the convolutions get Xavier
    weights and zero bias as in the official Deformable DETR; otherwise PyTorch's default initialisation.

    Shapes: entry ``l`` maps ``[B, C_l, H_l, W_l] -> [B, d_model, H_l, W_l]``; an extra level maps ``[B, C, H, W]
    -> [B, d_model, ceil(H / 2), ceil(W / 2)]``.
    """

    def block(c_in, kernel, stride):
        conv = nn.Conv2d(c_in, d_model, kernel_size=kernel, stride=stride, padding=kernel // 2)
        if not group_norm:
            return nn.Sequential(conv)
        nn.init.xavier_uniform_(conv.weight, gain=1)
        nn.init.constant_(conv.bias, 0)
        return nn.Sequential(conv, nn.GroupNorm(32, d_model))

    projections = [block(c, 1, 1) for c in in_channels]
    c_in = in_channels[-1]
    for _ in range(num_extra_levels):
        projections.append(block(c_in, 3, 2))
        c_in = d_model
    return nn.ModuleList(projections)


def set_target(labels: torch.Tensor, boxes_xyxy: torch.Tensor, image_size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """One image's target for the set criterion.

    Args:
        labels: ``Long[N]`` class indices; boxes_xyxy: ``[N, 4]`` xyxy absolute pixels of the unpadded image;
        image_size: its ``(h, w)``.

    Returns:
        ``{"labels": Long[N], "boxes": [N, 4] cxcywh normalised by (w, h)}`` on the boxes' device.
    """
    h, w = image_size
    dtype = torch.promote_types(boxes_xyxy.dtype, torch.float32)  # float32, or float64 boxes kept exact
    scale = torch.as_tensor([w, h, w, h], dtype=dtype, device=boxes_xyxy.device)
    return {"labels": labels.long(), "boxes": box_convert(boxes_xyxy.to(dtype) / scale, "xyxy", "cxcywh")}


def _prediction_heads(head: nn.Module, count: int, shared: bool) -> nn.ModuleList:
    """``count`` entries: ``head`` itself repeated (shared weights) or independent deep copies."""
    return nn.ModuleList(head if shared else copy.deepcopy(head) for _ in range(count))


_POSTPROCESS_FOR_LOSS = {"ce": "SoftmaxArgmaxPostProcess() or SoftmaxTopKPostProcess()",
                         "focal": "SigmoidTopKPostProcess()"}


def default_postprocess(criterion: nn.Module) -> nn.Module:
    """The official post-processing of the criterion's class loss: one class per query (DETR) for the softmax
    loss, the top 100 (query, class) sigmoid scores (Conditional / Deformable DETR) for the focal loss."""
    if getattr(criterion, "class_loss", "ce") == "focal":
        return SigmoidTopKPostProcess(num_detections=100)
    return SoftmaxArgmaxPostProcess()


def check_postprocess_matches_loss(postprocess: nn.Module, criterion: nn.Module) -> None:
    """Refuse a post-processing that reads the logits of another class loss than the criterion's: a sigmoid
    top-k over ``K + 1`` softmax logits returns the no-object column as a class (its detections are not those
    of the model), a softmax over ``K`` focal logits drops the last real class as no-object."""
    reads, trained = getattr(postprocess, "class_loss", None), getattr(criterion, "class_loss", None)
    if reads is None or trained is None or reads == trained:
        return
    raise UserValueError(
        f"model.postprocess {type(postprocess).__name__} reads the logits of a {reads!r} class loss, but "
        f"model.criterion.class_loss is {trained!r}: set model.postprocess to {_POSTPROCESS_FOR_LOSS[trained]}"
    )


def check_detr_structure(shapes: Dict[str, ShapeSpec], in_features: Sequence[str], num_extra_levels: int,
                         transformer: nn.Module, aux_loss: bool, num_queries_one2many: int, k_one2many: int) -> None:
    """Refuse (``UserValueError``, naming the config keys and the fix) a DETR whose parts do not fit together:
    ``in_features`` that the backbone (``shapes``: its ``output_shape()``) does not give, a number of feature
    levels the transformer does not take, one-to-many queries without learned queries, and ``aux_loss=False``
    with per-layer prediction heads (which would then get no gradient)."""
    unknown = [f for f in in_features if f not in shapes]
    if unknown:
        raise UserValueError(f"model.in_features {unknown} are not outputs of the backbone, which gives "
                             f"{sorted(shapes)}: choose among those, or add them to model.backbone.out_features")
    num_levels = len(in_features) + num_extra_levels
    if num_levels != getattr(transformer, "num_feature_levels", num_levels):
        raise UserValueError(
            f"{len(in_features)} in_features + {num_extra_levels} extra levels = {num_levels} levels "
            f"(model.in_features, model.num_extra_levels), but the transformer expects "
            f"num_feature_levels={transformer.num_feature_levels}: give it that many levels, or a transformer "
            "that takes these (Vanilla and Conditional DETR take one level, e.g. model.in_features=['res5']; "
            "Deformable DETR takes model.transformer.num_feature_levels)"
        )
    if num_queries_one2many < 0 or k_one2many < 1:
        raise UserValueError(f"need model.num_queries_one2many >= 0 and model.k_one2many >= 1, got "
                             f"{num_queries_one2many} and {k_one2many}")
    if num_queries_one2many and not transformer.learned_queries:
        raise UserValueError("model.num_queries_one2many needs learned object queries "
                             "(not two-stage Deformable DETR)")
    if not aux_loss and not transformer.shared_heads and transformer.num_prediction_heads > 1:
        # each earlier layer's own heads learn only from its auxiliary loss (the refinement step detaches):
        # without it they would never train, and DDP (find_unused_parameters=False) stops at iteration 2
        raise UserValueError("aux_loss=False with per-layer prediction heads (Deformable DETR with_box_refine or "
                             "two-stage): the earlier layers' heads would get no gradient; keep aux_loss=True "
                             "(as the official Deformable DETR) or set with_box_refine=False")


class DETR(nn.Module):
    """DETR family: backbone -> ``input_proj`` per level -> Transformer with object queries -> class / box
    heads of every decoder layer.

    Args:
        backbone: detectron2 ``Backbone`` (e.g. ``ResNet``) with ``output_shape()``.
        position_embedding: module ``mask [B, H, W] -> [B, d_model, H, W]`` applied to every level.
        transformer: a DETR-variant Transformer (:mod:`~siamese_detr.modeling.transformers.base` interface).
        num_classes: ``K`` foreground classes.
        num_queries: ``Q`` object queries (``query_embed`` has ``transformer.query_dim`` channels).
        criterion: module ``(outputs, targets) -> dict of unweighted losses`` (``SetCriterion``); its
            ``num_class_logits`` (``K + 1`` for softmax CE, ``K`` for focal) sizes the class head.
        weight_dict: loss weights; auxiliary copies ``loss_x_{i}`` default to the weight of ``loss_x``
            (:func:`~siamese_detr.modeling.criterion.weight_losses`), so it need not be expanded per layer.
        in_features: backbone outputs used, e.g. ``("res5",)`` (DETR, Conditional DETR, single-scale
            Deformable DETR) or ``("res3", "res4", "res5")`` (multi-scale Deformable DETR).
        num_extra_levels: stride-doubling levels added after the last backbone level (1 for multi-scale
            Deformable DETR).
        input_proj_norm: GroupNorm(32) after each input projection (Deformable DETR).
        aux_loss: add losses for every intermediate decoder layer (DETR §3.2 "Auxiliary decoding losses").
        postprocess: detections from the outputs (:mod:`~siamese_detr.modeling.postprocess`), reading the
            logits of the criterion's class loss; default :func:`default_postprocess` (the official rule of
            that loss).
        pixel_mean, pixel_std: per-channel normalisation, in the order of ``input_format``.
        input_format: channel order of ``batched_inputs[i]["image"]`` ("BGR" or "RGB"); it is not converted,
            only recorded (pixel statistics and backbone weights must match it).
        frozen_modules: names of submodules (e.g. ``("backbone",)`` or ``("backbone", "input_proj",
            "transformer", "query_embed")`` to train only the heads) whose parameters are frozen and which
            stay in eval mode; a frozen backbone also runs under ``no_grad``.
        allow_random_backbone: pretext models refuse a frozen backbone that no checkpoint initialises
            unless this is True (see ``siamese_detr.engine``); recorded here for every model.
        num_queries_one2many: ``Q2 > 0`` adds hybrid matching in training (:mod:`..hybrid_matching`, H-DETR):
            ``Q2`` more learned queries (``query_embed_one2many``, so checkpoints without them still load
            ``query_embed``) matched against the targets repeated ``k_one2many`` times; their weighted
            losses, times ``lambda_one2many``, are added with the suffix ``_one2many``. Inference uses
            the ``num_queries`` ordinary queries alone. 0 (default) = plain DETR.
        k_one2many: ``K``, copies of every target box for the extra queries (H-DETR: 6).
        lambda_one2many: ``lambda`` of H-DETR Eq. 4 (1.0).
    """

    def __init__(
        self,
        backbone: nn.Module,
        position_embedding: nn.Module,
        transformer: nn.Module,
        num_classes: int,
        num_queries: int,
        criterion: nn.Module,
        weight_dict: Dict[str, float],
        in_features: Sequence[str] = ("res5",),
        num_extra_levels: int = 0,
        input_proj_norm: bool = False,
        aux_loss: bool = True,
        postprocess: Optional[nn.Module] = None,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
        input_format: str = "BGR",
        frozen_modules: Sequence[str] = (),
        allow_random_backbone: bool = False,
        num_queries_one2many: int = 0,
        k_one2many: int = 6,
        lambda_one2many: float = 1.0,
    ):
        super().__init__()
        if isinstance(in_features, str):
            in_features = (in_features,)
        shapes = backbone.output_shape()
        check_detr_structure(shapes, in_features, num_extra_levels, transformer, aux_loss, num_queries_one2many,
                             k_one2many)
        self.backbone = backbone
        self.in_features = tuple(in_features)
        d_model = transformer.d_model
        self.input_proj = build_input_proj(
            [shapes[f].channels for f in in_features], d_model, num_extra_levels, input_proj_norm
        )
        self.feature_strides = tuple(int(shapes[f].stride) for f in in_features)
        max_stride = self.feature_strides[-1] * 2 ** num_extra_levels
        self.size_divisibility = max(int(getattr(backbone, "size_divisibility", 0)), max_stride)
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, transformer.query_dim) if transformer.learned_queries else None
        self.query_embed_one2many = (
            nn.Embedding(num_queries_one2many, transformer.query_dim) if num_queries_one2many else None
        )
        self.num_queries_one2many = num_queries_one2many
        self.k_one2many = k_one2many
        self.lambda_one2many = lambda_one2many

        class_head = nn.Linear(d_model, criterion.num_class_logits)
        if criterion.initial_class_bias is not None:
            nn.init.constant_(class_head.bias, criterion.initial_class_bias)
        heads, shared = transformer.num_prediction_heads, transformer.shared_heads
        self.class_embed = _prediction_heads(class_head, heads, shared)
        self.bbox_embed = _prediction_heads(MLP(d_model, d_model, 4, 3), heads, shared)
        if hasattr(transformer, "init_prediction_heads"):
            transformer.init_prediction_heads(self.class_embed, self.bbox_embed)
        self.criterion = criterion
        self.weight_dict = dict(weight_dict)
        self.postprocess = postprocess if postprocess is not None else default_postprocess(criterion)
        check_postprocess_matches_loss(self.postprocess, criterion)

        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.input_format = input_format
        self.allow_random_backbone = allow_random_backbone
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.frozen_modules = tuple(frozen_modules)
        for name in self.frozen_modules:
            if not isinstance(getattr(self, name, None), nn.Module):
                raise UserValueError(f"model.frozen_modules: {type(self).__name__} has no submodule {name!r}")
            getattr(self, name).requires_grad_(False)
        self.train(self.training)

    @property
    def device(self) -> torch.device:
        """The device of the ``pixel_mean`` buffer (moves with the model)."""
        return self.pixel_mean.device

    def train(self, mode: bool = True):
        """Train mode for every module except the frozen ones, which stay in eval mode."""
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    # --------------------------------------------------------------------------------------------- helpers
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise each ``image`` (uint8 ``[3, H_i, W_i]``) and pad with zeros (= the mean pixel) into an
        ``ImageList``; ``image_sizes`` keep each unpadded ``(H_i, W_i)``.

        The padded size is a multiple of the largest feature stride, so the nearest-downsampled pixel mask
        marks exactly the feature cells with no image pixel (cell ``y`` starts at pixel ``stride * y``)."""
        return self.pad_images([x["image"] for x in batched_inputs])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` in ``input_format`` -> normalised, in the dtype of the model's pixel mean
        (float32; that of a model cast with ``.half()`` / ``.to(torch.bfloat16)``), on the model's device."""
        return (images.to(self.device).to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def pad_images(self, images: List[torch.Tensor]) -> ImageList:
        """Normalise uint8 ``[3, H_i, W_i]`` images and pad them (see :meth:`preprocess_image`)."""
        return ImageList.from_tensors([self.normalize(x) for x in images], size_divisibility=self.size_divisibility)

    def backbone_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Backbone levels ``in_features``: ``[N, 3, H, W] -> [[N, C_l, H / s_l, W / s_l], ...]``
        (under ``no_grad`` when the backbone is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and "backbone" not in self.frozen_modules):
            out = self.backbone(images)
        return [out[f] for f in self.in_features]

    def project_levels(self, features: List[torch.Tensor], images: ImageList):
        """Input projections, padding masks and positional encodings of every level.

        Args:
            features: backbone levels of the padded batch (:meth:`backbone_features`).
            images: the padded batch (for the padding masks).

        Returns:
            ``(srcs, masks, pos)``: lists over the ``len(in_features) + num_extra_levels`` levels of
            ``[B, d_model, H_l, W_l]``, bool ``[B, H_l, W_l]`` (True = padding) and ``[B, d_model, H_l, W_l]``.
        """
        srcs = [proj(x) for proj, x in zip(self.input_proj, features)]
        for extra in self.input_proj[len(features):]:
            srcs.append(extra(features[-1] if len(srcs) == len(features) else srcs[-1]))
        masks = [feature_padding_mask(images, src.shape[-2:]) for src in srcs]
        pos = [self.position_embedding(m).to(src.dtype) for m, src in zip(masks, srcs)]
        return srcs, masks, pos

    def encode(self, images: ImageList) -> Tuple[List[torch.Tensor], EncoderMemory]:
        """Backbone + input projection + Transformer encoder of a padded batch.

        Returns:
            the backbone levels (``[B, C_l, H_l, W_l]`` per ``in_features``) and the encoder memory
            (:class:`EncoderMemory`, ``memory [B, S, d_model]`` over the ``S`` tokens of all levels).
        """
        features = self.backbone_features(images.tensor)
        return features, self.transformer.encode(*self.project_levels(features, images))

    def object_queries(self, batch: int) -> Optional[torch.Tensor]:
        """The learned object queries ``[B, Q, query_dim]`` (None when the transformer makes its own)."""
        if self.query_embed is None:
            return None
        return self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)

    def decode(self, memory: EncoderMemory, queries: Optional[torch.Tensor], self_attn_mask=None) -> DecoderOutput:
        """``transformer.decode`` with this model's heads (used by box refinement and two-stage variants).

        Args:
            memory: encoder output; queries: ``[B, Q, query_dim]`` or None; self_attn_mask: ``[Q, Q]`` or None.

        Returns:
            :class:`DecoderOutput`: ``hidden_states [L, B, Q, d_model]``, ``references [L, B, Q, 2 or 4]`` in
            logit space (None for Vanilla DETR), ``encoder_outputs`` (two-stage only).
        """
        return self.transformer.decode(
            memory, queries, self_attn_mask=self_attn_mask, class_embed=self.class_embed, bbox_embed=self.bbox_embed
        )

    @staticmethod
    def prepare_targets(batched_inputs: List[Dict], image_sizes: List[Tuple[int, int]], device) -> List[Dict]:
        """detectron2 ``instances`` (``gt_boxes`` xyxy absolute in the resized image, ``gt_classes``) ->
        ``[{"labels": Long[N], "boxes": [N, 4] cxcywh normalised by the unpadded (h, w)}]``.

        Raises ``ValueError`` naming the image when a training input has no ``instances`` (an image with no
        object must carry empty ``instances``, as ``DetrDatasetMapper`` gives for ``"annotations": []``)."""
        targets = []
        for x, size in zip(batched_inputs, image_sizes):
            if "instances" not in x:
                raise UserValueError(
                    f"DETR training input {x.get('image_id', x.get('file_name'))!r} has no 'instances': the "
                    f"dataset dict has no 'annotations' (an unlabelled dataset?). Train on a dataset registered "
                    f"with annotations through DetrDatasetMapper(is_train=True); images without objects need "
                    f"'annotations': []"
                )
            inst = x["instances"].to(device)
            targets.append(set_target(inst.gt_classes, inst.gt_boxes.tensor, size))
        return targets

    def forward_outputs(self, images: ImageList) -> Dict:
        """Run the network on a padded batch.

        Returns:
            ``{"pred_logits": [B, Q, K'], "pred_boxes": [B, Q, 4] cxcywh normalised by each unpadded image
            size, "aux_outputs": [...] (one dict per earlier decoder layer, only if aux_loss),
            "enc_outputs" (two-stage only)}``.
        """
        _, memory = self.encode(images)
        return self.head_outputs(self.decode(memory, self.object_queries(len(images))))

    def hybrid_outputs(self, images: ImageList) -> Tuple[Dict, Dict]:
        """Training-time outputs with hybrid matching: the ordinary and the one-to-many queries decoded
        together, each group blind to the other in self-attention.

        Returns:
            ``(one2one, one2many)`` in the format of :meth:`forward_outputs`, with ``Q1 = num_queries`` and
            ``Q2 = num_queries_one2many`` queries.
        """
        _, memory = self.encode(images)
        batch = len(images)
        extra = self.query_embed_one2many.weight.unsqueeze(0).expand(batch, -1, -1)
        queries = torch.cat([self.object_queries(batch), extra], dim=1)
        mask = group_self_attn_mask(self.num_queries, self.num_queries_one2many, queries.device)
        return split_query_groups(self.head_outputs(self.decode(memory, queries, mask)), self.num_queries)

    def hybrid_losses(self, one2one: Dict, one2many: Dict, targets: List[Dict]) -> Dict[str, torch.Tensor]:
        """Weighted losses of H-DETR Eq. 4: the one-to-one losses as usual plus, suffixed ``_one2many``, the
        losses of the extra queries against the targets repeated ``k_one2many`` times, each weighted by
        ``weight_dict`` and then by ``lambda_one2many``. Returns ``{name: scalar}``."""
        losses = weight_losses(self.criterion(one2one, targets), self.weight_dict)
        repeated = repeat_targets(targets, self.k_one2many)
        extra = weight_losses(self.criterion(one2many, repeated), self.weight_dict)
        losses.update({f"{k}_one2many": v * self.lambda_one2many for k, v in extra.items()})
        return losses

    def head_outputs(self, decoded: DecoderOutput) -> Dict:
        """Class / box heads of every decoder layer (see :meth:`forward_outputs`).

        Layer ``l`` of ``hs [L, B, Q, C]`` uses head entry ``num_decoder_layers - L + l``; its box is
        ``sigmoid(bbox_embed(hs_l) + pad(reference_l))`` with the reference (logit space) added to the first
        2 or 4 channels (nothing for Vanilla DETR).
        """
        hs, refs = decoded.hidden_states, decoded.references
        offset = self.transformer.num_decoder_layers - hs.shape[0]
        logits, boxes = [], []
        for layer, h in enumerate(hs):
            logits.append(self.class_embed[offset + layer](h))
            delta = self.bbox_embed[offset + layer](h)
            if refs is not None:
                ref = refs[layer]
                delta = torch.cat([delta[..., : ref.shape[-1]] + ref, delta[..., ref.shape[-1]:]], dim=-1)
            boxes.append(delta.sigmoid())
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        if decoded.encoder_outputs is not None:
            out["enc_outputs"] = decoded.encoder_outputs
        return out

    def inference(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Detections per image (``postprocess``), boxes xyxy absolute in the (resized) input image.

        Args:
            pred_logits: ``[B, Q, K']``; pred_boxes: ``[B, Q, 4]`` cxcywh normalised;
            image_sizes: unpadded ``(h, w)`` per image.
        """
        return self.postprocess(pred_logits, pred_boxes, image_sizes)

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2 dicts with ``image`` (uint8 ``[3, H, W]``), optional ``height`` /
                ``width`` (original size, for the output resolution) and, in training, ``instances``.

        Returns:
            training: dict of weighted losses (incl. aux ``_{i}`` keys, and ``*_one2many`` with hybrid matching);
            eval: list of ``{"instances": Instances}`` in original-image coordinates.
        """
        images = self.preprocess_image(batched_inputs)
        if self.training and self.num_queries_one2many:
            one2one, one2many = self.hybrid_outputs(images)
            targets = self.prepare_targets(batched_inputs, images.image_sizes, self.device)
            return self.hybrid_losses(one2one, one2many, targets)
        outputs = self.forward_outputs(images)
        if self.training:
            targets = self.prepare_targets(batched_inputs, images.image_sizes, self.device)
            return weight_losses(self.criterion(outputs, targets), self.weight_dict)
        results = self.inference(outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes)
        processed = []
        for res, x, size in zip(results, batched_inputs, images.image_sizes):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            processed.append({"instances": detector_postprocess(res, height, width)})
        return processed
