"""Helpers of the UP-DETR / DETReg / Siamese DETR model tests: fake query batches, a few training steps."""

from typing import List, Optional, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.events import EventStorage

from siamese_detr.modeling import DetrTransformer

IMAGE_SIZES = [(64, 96), (80, 64), (72, 72)]


def tiny_transformer(d_model: int = 32, layers: int = 2) -> DetrTransformer:
    """Vanilla DETR transformer of the tiny test models: 4 heads, FFN 64, no dropout."""
    return DetrTransformer(d_model=d_model, nhead=4, num_encoder_layers=layers, num_decoder_layers=layers,
                           dim_feedforward=64, dropout=0.0)


def fake_query_batch(counts: Sequence[int], crops_key: str, boxes_key: str, size: int = 32, seed: int = 0) -> list:
    """Mapper-like dicts for ``len(counts)`` images of the sizes ``IMAGE_SIZES`` (at most 3): image ``b`` gets
    ``counts[b]`` random crops ``uint8 [k, 3, size, size]`` under ``crops_key`` and boxes ``[k, 4]`` xyxy
    absolute under ``boxes_key`` (each inside the image: corner in its top-left quarter, sides 20-50%).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, (k, (h, w)) in enumerate(zip(counts, IMAGE_SIZES)):
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = (0.2 + 0.3 * torch.rand(k, 2, generator=g)) * torch.tensor([w, h])
        out.append({
            "image_id": b,
            "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            crops_key: torch.randint(0, 256, (k, 3, size, size), generator=g, dtype=torch.uint8),
            boxes_key: torch.cat([xy, xy + wh], dim=1),
        })
    return out


def losses_over_steps(
    model: torch.nn.Module,
    batch: list,
    steps: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    clip_max_norm: Optional[float] = None,
) -> List[float]:
    """Total loss (sum of ``model(batch)``'s loss dict) before each of ``steps`` AdamW steps on ``batch``.

    Only parameters with ``requires_grad`` are optimised (the frozen backbone stays as it is); with
    ``clip_max_norm`` the gradient norm is clipped before each step, as the trainer's ``clip_grad``.
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    totals = []
    with EventStorage():
        for _ in range(steps):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            if clip_max_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
            optimizer.step()
            totals.append(loss.item())
    return totals


def load_and_report(model: torch.nn.Module, path: str):
    """Load the checkpoint ``path`` into ``model`` with Detectron2's ``DetectionCheckpointer.load`` (what
    ``train.init_checkpoint`` does) and return the ``_IncompatibleKeys`` it found (missing, unexpected,
    ``incorrect_shapes``). Goes through the public ``load``: detectron2 after v0.6 refuses ``_load_file``
    called on its own."""
    checkpointer = DetectionCheckpointer(model)
    load_model = checkpointer._load_model
    reports = []

    def load_model_and_record(checkpoint):
        reports.append(load_model(checkpoint))
        return reports[-1]

    checkpointer._load_model = load_model_and_record
    checkpointer.load(path, checkpointables=[])
    assert len(reports) == 1, reports
    return reports[0]
