"""tools/lazyconfig_train_net.py loaded once as the module ``train_net`` for the tests that call its ``main``, and
``TINY``, the overrides that make the demo's detector config tiny enough for a test."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lazyconfig_train_net", ROOT / "tools" / "lazyconfig_train_net.py")
train_net = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_net)

# the demo config, made tinier: small images, 1 encoder layer (2 decoder layers: one auxiliary), no workers
TINY = [
    "model.transformer.num_encoder_layers=1",
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentation_with_crop=null",
    "dataloader.train.mapper.augmentation.1.short_edge_length=[96,128]",
    "dataloader.test.mapper.augmentation.0.short_edge_length=112",
    "train.log_period=1", "train.seed=0", "train.device=cpu",
]
