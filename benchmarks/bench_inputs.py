"""Inputs shared by the benchmarks: real mapper outputs of the built-in dataset, prepared before timing."""


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
