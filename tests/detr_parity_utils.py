"""Helpers of the parity tests against recorded official outputs (tests/fixtures/<variant>/, see each README).

A fixture holds the official model's state dict (no backbone) and ``io.pt``: the backbone feature map of a
padded batch of two images of different sizes, the official outputs of every decoder layer and the official
``PostProcess`` result. The project model gets the official weights through the registered converter and a
stub backbone that returns the recorded feature map.
"""

from pathlib import Path
from typing import Dict, List, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone

from siamese_detr.checkpoint.registry import get_converter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOL = 1e-12  # float64 parity (issue 7 asks for 1e-6; measured ~1e-14)


class RecordedBackbone(Backbone):
    """Returns the recorded ``res5`` feature map ``[B, C, H, W]`` of the padded batch (stride 32)."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.register_buffer("features", features, persistent=False)

    def forward(self, x):
        b, _, h, w = self.features.shape
        assert tuple(x.shape[-2:]) == (32 * h, 32 * w) and x.shape[0] == b, "not the recorded padded batch"
        return {"res5": self.features}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.features.shape[1], stride=32)}


def load_fixture(name: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(official state dict, io dict)`` of ``tests/fixtures/<name>`` (tensor-only files)."""
    folder = FIXTURES / name
    state = torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
    io = torch.load(folder / "io.pt", map_location="cpu", weights_only=True)
    return state, io


def convert_into(model: torch.nn.Module, converter: str, state: Dict[str, torch.Tensor]) -> None:
    """Convert ``state`` with the registered converter and load it strictly (the stub backbone has no weights)."""
    result = get_converter(converter)(state)
    assert result.unmapped == [], result.unmapped
    missing, unexpected = model.load_state_dict(result.converted, strict=False)
    assert unexpected == [], unexpected
    assert missing == [], missing


def batched_inputs(io: Dict[str, torch.Tensor]) -> List[Dict]:
    """uint8 images of the recorded unpadded sizes (their pixels are not used by the stub backbone)."""
    return [{"image": torch.zeros(3, int(h), int(w), dtype=torch.uint8)} for h, w in io["image_sizes"].tolist()]


def per_layer_outputs(outputs: Dict) -> Tuple[torch.Tensor, torch.Tensor]:
    """``([L, B, Q, K'], [L, B, Q, 4])`` from the meta-architecture's output dict (aux layers first)."""
    layers = outputs.get("aux_outputs", []) + [outputs]
    return (
        torch.stack([x["pred_logits"] for x in layers]),
        torch.stack([x["pred_boxes"] for x in layers]),
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol, f"max abs difference {err:.3g} > {tol:g}"
