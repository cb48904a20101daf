"""The model shape shared by the CPU demo configs (configs/demo/), so that the Siamese DETR pretraining
checkpoint loads into the finetune DETR: ResNet-18 (random weights: none can be downloaded here), d_model
128, 4 heads, FFN 256, 2 encoder + 2 decoder layers, 20 object queries."""

DEMO_DEPTH = 18
DEMO_D_MODEL = 128
DEMO_NHEAD = 4
DEMO_FFN = 256
DEMO_LAYERS = 2
DEMO_QUERIES = 20


def apply_demo_shape(model):
    """Shrink a DETR / SiameseDETRPretrain model config (built on ``detr_r50.py``) to the demo shape."""
    model.backbone.stages.depth = DEMO_DEPTH  # stride_in_1x1 is dropped for depth < 50
    model.position_embedding.num_pos_feats = DEMO_D_MODEL // 2
    model.transformer.d_model = DEMO_D_MODEL
    model.transformer.nhead = DEMO_NHEAD
    model.transformer.dim_feedforward = DEMO_FFN
    model.transformer.num_encoder_layers = DEMO_LAYERS
    model.transformer.num_decoder_layers = DEMO_LAYERS
    model.num_queries = DEMO_QUERIES
    return model
