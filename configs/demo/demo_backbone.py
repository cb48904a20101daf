"""The demo's backbone stage (``make demo`` runs it once; the checkpoint is cached and reused until this
config changes): a narrow ResNet-18 (res2 width 32, up to res4, stride 16) trained on the built-in world.

    python tools/train_demo_backbone.py --config-file configs/demo/demo_backbone.py train.output_dir=...

``train.method="supervised"`` (the demo's choice): cross-entropy on a separate built-in classification set
(objects of 400 extra scenes, seeds 5e6+, disjoint from every detection split). ``"simsiam"``: label-free,
views of object-sized regions of the unlabelled ``synthetic_shapes_train_large`` images — measured once
(150 iterations, 48 px crops): k-NN 61.7% vs 64.0% for the random network, i.e. no useful features in
the time, so the demo uses the supervised set (k-NN 96.0% after 60 iterations on this
machine; 93.7% on another: the project card's "Not the backbone").
See :mod:`siamese_detr.demo.backbone_pretrain`. Settings chosen once for a ~1 minute CPU budget.
"""
from detectron2.config import LazyCall as L

from siamese_detr.demo import build_narrow_resnet

DEMO_BACKBONE_WIDTH = 32
DEMO_BACKBONE_FEATURE = "res4"

backbone = L(build_narrow_resnet)(
    depth=18, width=DEMO_BACKBONE_WIDTH, norm="BN", out_features=[DEMO_BACKBONE_FEATURE], freeze_at=0
)
data = dict(
    pixel_mean=[103.530, 116.280, 123.675],  # BGR, as the detector configs
    pixel_std=[57.375, 57.120, 58.395],
    image_split="train_large",  # simsiam: its PNGs only, the annotations unused
    max_images=None,
    classification_scenes=400,  # supervised: objects of this many extra scenes
    classification_seed=5_000_000,
)

train = dict(
    method="supervised",
    output_dir="./output/demo_backbone",
    max_iter=60,
    batch_size=64,
    crop_size=32,
    lr=0.05,
    weight_decay=1e-4,
    region_scale=(0.12, 0.6),
    view_jitter=0.2,
    colour_jitter=0.3,
    projection_dim=256,
    predictor_dim=64,
    knn_k=10,
    seed=0,
)
