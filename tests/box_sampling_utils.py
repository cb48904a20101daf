"""Helpers of the two-view geometry tests (test_views.py, test_view_regions.py): seeded random proposals
and independent box checks (torchvision's IoU, containment), all xyxy absolute pixels."""

import numpy as np
import torch
from torchvision.ops import box_iou as tv_box_iou


def random_boxes_xyxy(rng, image_hw, num_boxes):
    """Test proposals: sides U(0.1, 0.6) of the image side, anywhere inside it; [num_boxes, 4] xyxy."""
    h, w = float(image_hw[0]), float(image_hw[1])
    sizes = rng.uniform(0.1, 0.6, size=(num_boxes, 2)) * np.array([w, h])
    x0 = rng.uniform(0.0, 1.0, size=num_boxes) * (w - sizes[:, 0])
    y0 = rng.uniform(0.0, 1.0, size=num_boxes) * (h - sizes[:, 1])
    return np.stack([x0, y0, x0 + sizes[:, 0], y0 + sizes[:, 1]], axis=1)


EPS = 1e-6


def tv_iou(a, b) -> float:
    return float(
        tv_box_iou(
            torch.as_tensor(a, dtype=torch.float64)[None], torch.as_tensor(b, dtype=torch.float64)[None]
        )
    )


def inside(boxes, container, tol=1e-6) -> bool:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return bool(
        np.all(boxes[:, 0] >= container[0] - tol)
        and np.all(boxes[:, 1] >= container[1] - tol)
        and np.all(boxes[:, 2] <= container[2] + tol)
        and np.all(boxes[:, 3] <= container[3] + tol)
    )
