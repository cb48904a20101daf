"""DETR finetuning meta-architecture for detectron2 (Carion et al. 2020), variant-agnostic.

Everything variant-specific lives in the ``transformer`` (and the criterion); attribute names are shared with
the pretraining meta-architectures so their checkpoints load here without conversion.
"""

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from ..backbone import feature_padding_mask
from ..criterion import weight_losses
from ..heads import MLP

__all__ = ["DETR"]


class DETR(nn.Module):
    """DETR: backbone -> 1x1 ``input_proj`` -> Transformer with learned object queries -> class / box heads.

    Args:
        backbone: detectron2 ``Backbone`` (e.g. ``ResNet``) with ``output_shape()``.
        position_embedding: module ``mask [B, H, W] -> [B, d_model, H, W]``.
        transformer: module with ``d_model`` and
            ``forward(src [B,C,H,W], mask [B,H,W], query_embed [Q,C], pos [B,C,H,W])
            -> (hs [L,B,Q,C], memory)``.
        num_classes: ``K`` foreground classes; ``class_embed`` predicts ``K + 1`` (last = no-object).
        num_queries: ``Q`` object queries.
        criterion: module ``(outputs, targets) -> dict of unweighted losses`` (e.g. ``SetCriterion``).
        weight_dict: loss weights; auxiliary copies ``loss_x_{i}`` default to the weight of ``loss_x``
            (:func:`~siamese_detr.modeling.criterion.weight_losses`), so it need not be expanded per layer.
        in_feature: backbone output used (single level).
        aux_loss: add losses for every intermediate decoder layer (DETR §3.2 "Auxiliary decoding losses").
        pixel_mean, pixel_std: per-channel normalisation, in the order of ``input_format``.
        input_format: channel order of ``batched_inputs[i]["image"]`` ("BGR" or "RGB"); it is not converted,
            only recorded (pixel statistics and backbone weights must match it).
        select_box_nums_for_evaluation: detections kept per image at inference.
        frozen_modules: names of submodules (e.g. ``("backbone",)`` or ``("backbone", "input_proj",
            "transformer", "query_embed")`` to train only the heads) whose parameters are frozen and which
            stay in eval mode; a frozen backbone also runs under ``no_grad``.

    Inference keeps, per image, the top ``select_box_nums_for_evaluation`` (query, class) pairs ranked by the
    softmax probability of the class with the no-object column excluded (as detrex does), so one query may
    yield several detections with different classes. This differs from the original DETR, which keeps each
    query's arg-max foreground class; the top-k rule gives equal or higher COCO AP.
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
        in_feature: str = "res5",
        aux_loss: bool = True,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
        input_format: str = "BGR",
        select_box_nums_for_evaluation: int = 100,
        frozen_modules: Sequence[str] = (),
    ):
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        d_model = transformer.d_model
        in_channels = backbone.output_shape()[in_feature].channels
        self.input_proj = nn.Conv2d(in_channels, d_model, kernel_size=1)
        self.feature_stride = int(backbone.output_shape()[in_feature].stride)
        self.size_divisibility = max(int(getattr(backbone, "size_divisibility", 0)), self.feature_stride)
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.criterion = criterion
        self.weight_dict = dict(weight_dict)

        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.input_format = input_format
        self.select_box_nums_for_evaluation = select_box_nums_for_evaluation
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.frozen_modules = tuple(frozen_modules)
        for name in self.frozen_modules:
            if not isinstance(getattr(self, name, None), nn.Module):
                raise ValueError(f"frozen_modules: {type(self).__name__} has no submodule {name!r}")
            getattr(self, name).requires_grad_(False)
        self.train(self.training)

    @property
    def device(self) -> torch.device:
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

        The padded size is a multiple of the feature stride, so the nearest-downsampled pixel mask marks
        exactly the feature cells with no image pixel (cell ``y`` starts at pixel ``stride * y``)."""
        return self.pad_images([x["image"] for x in batched_inputs])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` in ``input_format`` -> normalised float on the model's device."""
        return (images.to(self.device).float() - self.pixel_mean) / self.pixel_std

    def pad_images(self, images: List[torch.Tensor]) -> ImageList:
        """Normalise uint8 ``[3, H_i, W_i]`` images and pad them (see :meth:`preprocess_image`)."""
        return ImageList.from_tensors([self.normalize(x) for x in images], size_divisibility=self.size_divisibility)

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone, level ``in_feature``: ``[N, 3, H, W] -> [N, C_in, H / stride, W / stride]``
        (under ``no_grad`` when the backbone is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and "backbone" not in self.frozen_modules):
            return self.backbone(images)[self.in_feature]

    def encode(self, images: ImageList) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone + input projection + Transformer encoder of a padded batch.

        Returns:
            ``features [B, C_in, H, W]`` (backbone), ``memory [B, HW, d_model]``, ``mask_flat [B, HW]``
            (True = padding) and ``pos_flat [B, HW, d_model]``, ready for ``transformer.decode``.
        """
        features = self.backbone_features(images.tensor)
        mask = feature_padding_mask(images, features.shape[-2:])  # [B, H, W]
        pos = self.position_embedding(mask).to(features.dtype)  # [B, d_model, H, W]
        memory, mask_flat, pos_flat = self.transformer.encode(self.input_proj(features), mask, pos)
        return features, memory, mask_flat, pos_flat

    @staticmethod
    def prepare_targets(batched_inputs: List[Dict], image_sizes: List[Tuple[int, int]], device) -> List[Dict]:
        """detectron2 ``instances`` (``gt_boxes`` xyxy absolute in the resized image, ``gt_classes``) ->
        ``[{"labels": Long[N], "boxes": [N, 4] cxcywh normalised by the unpadded (h, w)}]``."""
        targets = []
        for x, (h, w) in zip(batched_inputs, image_sizes):
            inst = x["instances"].to(device)
            scale = torch.as_tensor([w, h, w, h], dtype=torch.float32, device=device)
            boxes = box_convert(inst.gt_boxes.tensor.float() / scale, "xyxy", "cxcywh")
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def forward_outputs(self, images: ImageList) -> Dict:
        """Run the network on a padded batch.

        Returns:
            ``{"pred_logits": [B, Q, K+1], "pred_boxes": [B, Q, 4] cxcywh normalised by each unpadded image
            size, "aux_outputs": [...] (one dict per earlier decoder layer, only if aux_loss)}``.
        """
        _, memory, mask_flat, pos_flat = self.encode(images)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(memory.shape[0], -1, -1)  # [B, Q, C]
        hs = self.transformer.decode(
            torch.zeros_like(query_pos), memory, mask_flat, pos_flat, query_pos
        )  # [L, B, Q, C]
        return self.head_outputs(hs)

    def head_outputs(self, hs: torch.Tensor) -> Dict:
        """Class / box heads on decoder states ``hs [L, B, Q, C]`` (see :meth:`forward_outputs`)."""
        logits = self.class_embed(hs)  # [L, B, Q, K+1]
        boxes = self.bbox_embed(hs).sigmoid()  # [L, B, Q, 4]
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return out

    def inference(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Top-k (query, class) detections per image, boxes xyxy absolute in the (resized) input image.

        Args:
            pred_logits: ``[B, Q, K+1]``; pred_boxes: ``[B, Q, 4]`` cxcywh normalised;
            image_sizes: unpadded ``(h, w)`` per image.

        Returns:
            B ``Instances`` of size ``image_sizes[b]`` with ``pred_boxes``, ``scores``, ``pred_classes``.
        """
        prob = pred_logits.softmax(-1)[..., :-1]  # [B, Q, K] foreground probabilities
        num_classes = prob.shape[-1]
        k = min(self.select_box_nums_for_evaluation, prob.shape[1] * num_classes)
        results = []
        for prob_b, boxes_b, (h, w) in zip(prob, pred_boxes, image_sizes):
            scores, flat = prob_b.flatten().topk(k)
            query = torch.div(flat, num_classes, rounding_mode="floor")
            scale = torch.as_tensor([w, h, w, h], dtype=boxes_b.dtype, device=boxes_b.device)
            boxes = box_convert(boxes_b[query], "cxcywh", "xyxy") * scale
            res = Instances((h, w))
            res.pred_boxes = Boxes(boxes)
            res.scores = scores
            res.pred_classes = flat % num_classes
            results.append(res)
        return results

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2 dicts with ``image`` (uint8 ``[3, H, W]``), optional ``height`` /
                ``width`` (original size, for the output resolution) and, in training, ``instances``.

        Returns:
            training: dict of weighted losses (incl. aux ``_{i}`` keys);
            eval: list of ``{"instances": Instances}`` in original-image coordinates.
        """
        images = self.preprocess_image(batched_inputs)
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
