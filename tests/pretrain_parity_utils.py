"""Helpers shared by the parity tests of the pretraining models against their official code
(``test_parity_up_detr_pretrain.py``, ``test_parity_detreg_pretrain.py``): float64 comparisons, per-layer
stacking of the criterion's outputs, and the gradient check of every trainable parameter against a recorded
official gradient (whole, or its norm and probe projections for large tensors)."""
import torch

TOL = 1e-12  # float64 parity
PROBES = 4  # probe directions the recorders store for large gradients


def per_layer(outputs, key):
    return torch.stack([x[key] for x in outputs.get("aux_outputs", []) + [outputs]])


def assert_close(actual, expected, tol=TOL):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol, f"max abs difference {err:.3g} > {tol:g}"


def official_to_our_names(state, convert):
    """official key -> our key(s) under ``convert`` (official state dict -> ours; the converters move values
    unchanged, so each official tensor is marked with its index)."""
    marked = {k: torch.full_like(v, float(i)) for i, (k, v) in enumerate(state.items())}
    names = {}
    for ours, value in convert(marked).items():
        names.setdefault(list(state)[int(value.flatten()[0])], []).append(ours)
    return names


def probe_projections(grad):
    """(norm, inner products with the recorders' probe directions ``cos((0.1 + 0.37 k) i + k)``)."""
    i = torch.arange(grad.numel(), dtype=torch.float64)
    directions = torch.stack([torch.cos((0.1 + 0.37 * k) * i + k).view(grad.shape) for k in range(PROBES)])
    return torch.cat([grad.norm().view(1), (directions * grad).flatten(1).sum(1)])


def assert_gradients_match(record, state, model, convert, official_rows):
    """Every trainable parameter's gradient against the recorded official one (whole, or norm + probes); the
    official class rows outside ``official_rows`` must have none (the class-head rule)."""
    params = dict(model.named_parameters(remove_duplicate=False))  # shared heads: one tensor, every alias
    trainable = {k for k, p in params.items() if p.requires_grad}
    assert not any(k.startswith("backbone.") for k in trainable)
    compared = set()
    for official, ours_names in official_to_our_names(state, convert).items():
        for name in ours_names:
            grad = params[name].grad
            if f"grad.{official}" in record:
                expected = record[f"grad.{official}"]
                if name.startswith("class_embed."):
                    others = [r for r in range(expected.shape[0]) if r not in official_rows]
                    assert torch.all(expected[others] == 0), "the rule: no gradient on the unused class rows"
                    expected = expected[official_rows]
                assert_close(grad, expected)
            else:
                expected = record[f"gradproj.{official}"]
                assert_close(probe_projections(grad), expected, tol=TOL * max(1.0, float(expected[0])))
            compared.add(name)
    assert compared == trainable


def run_capturing(model, inputs, methods):
    """``model(inputs)`` (training mode) with what it computes on the way captured, no model code repeated:
    ``seen[name]`` is the return value of each model method in ``methods`` (e.g. ``"decode"``); ``seen``
    also gets the criterion's ``outputs`` / ``targets`` / ``indices`` and the ``sem_embed`` output ``sem``.

    Returns:
        ``(losses, seen)``.
    """
    seen = {}

    def recording(name, method):
        def call(*args, **kwargs):
            seen[name] = method(*args, **kwargs)
            return seen[name]
        return call

    for name in methods:
        setattr(model, name, recording(name, getattr(model, name)))
    handles = [
        model.criterion.register_forward_hook(
            lambda m, args, out: seen.update(outputs=args[0], targets=args[1], indices=out[1])),
        model.sem_embed.register_forward_hook(lambda m, args, out: seen.update(sem=out)),
    ]
    try:
        losses = model(inputs)
    finally:
        for name in methods:
            delattr(model, name)  # the instance attribute; the class's method shows again
        for h in handles:
            h.remove()
    return losses, seen
