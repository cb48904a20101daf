"""The ``train`` dict read by tools/lazyconfig_train_net.py (detectron2's configs/common/train.py, extended)."""
from siamese_detr.utils import default_device

train = dict(
    output_dir="./output",
    # a detectron2 checkpoint (.pth) to initialise from, e.g. a pretraining model_final.pth
    init_checkpoint="",
    # a Detectron2 .pkl init_checkpoint is unpickled (which can run code from the file) only when True
    # (or with --trust-pickle); .pth files are always read tensors-only
    trust_pickle=False,
    # --eval-only refuses a checkpoint that leaves parameters of the model random, unless this is True
    # (a random-initialisation baseline on purpose, as make demo's "random-init eval")
    eval_allow_random=False,
    # training from init_checkpoint refuses tensors of another shape than the model's (other than class heads),
    # e.g. another model.num_queries, unless this is True (they then start from scratch, as detectron2 does)
    allow_shape_mismatch=False,
    max_iter=90000,
    # AMP is used only where CUDA is present (the training script turns it off on CPU)
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    # evaluate every eval_period iterations and at the end; <= 0: no evaluation at all
    eval_period=5000,
    log_period=20,
    # "cuda" when a GPU is visible, else "cpu"; override with train.device=...
    device=default_device(),
    # total gradient L2 norm is clipped to this value (DETR: 0.1); <= 0 disables
    clip_grad=dict(max_norm=0.1, norm_type=2.0),
    # < 0: a random seed per run; >= 0: seeded (seed + rank per process): bit-reproducible on CPU; on CUDA the
    # backward of grid_sample and of the compiled deformable attention accumulate with atomics (not bitwise)
    seed=-1,
)
