"""Shared by the benchmarks: the model + optimiser of a config, real mapper outputs of the built-in dataset
(prepared before timing), and one timed training step."""
import time


def mapped_batches(mapper, batch_size: int, count: int, dataset: str = "synthetic_shapes_train"):
    """``count`` batches of ``batch_size`` outputs of ``mapper`` on ``dataset`` (images that the mapper skips,
    returning None, are passed over), always the same images in the same order."""
    from detectron2.data import DatasetCatalog

    import siamese_detr.data  # noqa: F401  (registers the built-in dataset)

    dicts = DatasetCatalog.get(dataset)
    samples, i = [], 0
    while len(samples) < batch_size * count:
        out = mapper(dict(dicts[i % len(dicts)]))
        i += 1
        if out is not None:
            samples.append(out)
    return [samples[b * batch_size:(b + 1) * batch_size] for b in range(count)]


def build_training(cfg, device: str):
    """The config's model (seed 0, train mode, on ``device``) and optimiser with its gradient clipping."""
    import torch
    from detectron2.config import instantiate

    from siamese_detr.engine import add_gradient_clipping

    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", None)
    if clip is not None:
        add_gradient_clipping(optimizer, clip.max_norm, clip.get("norm_type", 2.0))
    return model, optimizer


def time_step(model, optimizer, batch, device: str) -> float:
    """Seconds of one training step (forward, the sum of the loss dict backward, optimizer step), CUDA work
    included (synchronised before and after)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = sum(model(batch).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0
