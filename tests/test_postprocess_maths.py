"""Post-processing rules called with their defaults: the official top-100 (query, class) pairs, checked against
an independent sort of the scores."""

import torch

from siamese_detr.modeling import SigmoidTopKPostProcess, SoftmaxTopKPostProcess


def test_top_k_rules_keep_100_pairs_by_default():
    """``SigmoidTopKPostProcess()`` (the rule the model's error message suggests for focal heads) and
    ``SoftmaxTopKPostProcess()`` keep the official 100 best (query, class) pairs: Q * K = 50 * 3 = 150 pairs give
    100 detections, the 100 largest scores; each box is its query's cxcywh box scaled to the (h, w) = (20, 40)
    image, xyxy."""
    torch.manual_seed(0)
    boxes = torch.rand(1, 50, 4) * 0.4 + 0.3
    for rule, logits, scores_of in (
        (SigmoidTopKPostProcess(), torch.randn(1, 50, 3), lambda lg: lg.sigmoid()),
        (SoftmaxTopKPostProcess(), torch.randn(1, 50, 4), lambda lg: lg.softmax(-1)[..., :3]),
    ):
        inst = rule(logits, boxes, [(20, 40)])[0]
        assert len(inst) == 100
        all_scores = scores_of(logits[0])  # [Q, K]
        expected = all_scores.flatten().sort(descending=True).values[:100]
        torch.testing.assert_close(inst.scores.sort(descending=True).values, expected)
        for score, cls, box in zip(inst.scores.tolist(), inst.pred_classes.tolist(), inst.pred_boxes.tensor):
            query = int((all_scores[:, cls] - score).abs().argmin())
            cx, cy, w, h = boxes[0, query].tolist()
            xyxy = torch.tensor([(cx - w / 2) * 40, (cy - h / 2) * 20, (cx + w / 2) * 40, (cy + h / 2) * 20])
            torch.testing.assert_close(box, xyxy)
