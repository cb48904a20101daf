"""Drawing of one synthetic-shapes scene (numpy + OpenCV only, no file I/O).

A scene is a textured background (gradient, smooth noise or random lines) with small clutter
strokes/blobs that are *not* objects, then 2-8 objects painted back to front. Each category has a
characteristic shape, texture and hue (see :data:`CATEGORY_STYLES`); colours are jittered per object.
Objects span 8-60% of the image's short side. A per-pixel owner map records which object is on top,
so each object's *visible* pixels give its annotation: objects with less than ``min_visible`` of
their pixels visible are dropped (they stay painted, unannotated, like heavily occluded COCO objects).

All randomness comes from the ``np.random.Generator`` passed in; integer texture arithmetic keeps the
pixels reproducible. Coordinates: boxes are COCO ``[x, y, w, h]`` in absolute pixels of the image,
pixel-inclusive (a box covering columns 3..7 has x=3, w=5).
"""
import math
from typing import Dict, List, Tuple

import cv2
import numpy as np

# (category name, shape, texture, base hue in OpenCV HSV units 0..179)
CATEGORY_STYLES: Tuple[Tuple[str, str, str, int], ...] = (
    ("circle", "circle", "solid", 0),  # red disc
    ("ring", "ring", "solid", 115),  # blue annulus
    ("square", "square", "checkered", 12),  # orange checkerboard
    ("triangle", "triangle", "striped", 60),  # green stripes
    ("star", "star", "solid", 28),  # yellow five-pointed star
    ("cross", "cross", "outlined", 140),  # purple plus sign with a dark outline
    ("hexagon", "hexagon", "dotted", 92),  # cyan hexagon with dots
    ("crescent", "crescent", "gradient", 165),  # magenta crescent, radial gradient
)

# aspect range (w / h) of the object's box per shape
_ASPECT = {"circle": (0.85, 1.18), "ring": (0.8, 1.25), "square": (0.8, 1.25), "star": (0.85, 1.18)}


def hsv_colour(rng: np.random.Generator, hue: int, hue_jitter: int = 8, min_sv: int = 140) -> np.ndarray:
    """A BGR uint8 colour [3] with hue ``hue +- hue_jitter`` and saturation/value in [min_sv, 255]."""
    h = int(hue + rng.integers(-hue_jitter, hue_jitter + 1)) % 180
    s, v = rng.integers(min_sv, 256, size=2)
    hsv = np.array([[[h, s, v]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]


def _random_colour(rng: np.random.Generator, max_sat: int = 255) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(0, max_sat + 1), rng.integers(60, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]


def _shade(colour: np.ndarray, delta: int) -> np.ndarray:
    return np.clip(colour.astype(np.int32) + delta, 0, 255).astype(np.uint8)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured background, uint8 BGR [height, width, 3]: gradient, smooth noise or random lines."""
    kind = rng.integers(3)
    c1, c2 = _random_colour(rng, 120).astype(np.int32), _random_colour(rng, 120).astype(np.int32)
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == 0:  # linear gradient along a random integer direction
        a, b = rng.integers(-3, 4, size=2)
        if a == 0 and b == 0:
            a = 1
        t = a * xx + b * yy
        t = ((t - t.min()) * 256) // (t.max() - t.min() + 1)  # 0..255
        image = (c1 * (255 - t[..., None]) + c2 * t[..., None]) // 255
    elif kind == 1:  # smooth colour noise: coarse random grid, bilinearly upsampled
        cell = int(rng.integers(8, 33))
        coarse = rng.integers(0, 256, size=(height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
        coarse = (coarse.astype(np.int32) // 2 + (c1 + c2) // 4).astype(np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.int32)
    else:  # flat colour crossed by random lines
        image = np.empty((height, width, 3), np.uint8)
        image[:] = c1.astype(np.uint8)
        for _ in range(int(rng.integers(15, 50))):
            p = rng.integers(0, [width, height, width, height])
            cv2.line(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])),
                     _random_colour(rng, 120).tolist(), int(rng.integers(1, 4)))
        image = image.astype(np.int32)
    image = image + rng.integers(-8, 9, size=(height, width, 1))  # mild sensor-like noise
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_clutter(rng: np.random.Generator, image: np.ndarray, num: int) -> None:
    """Draws ``num`` distractor strokes and blobs (smaller than any object) in place."""
    height, width = image.shape[:2]
    reach = max(3, int(0.07 * min(height, width)))
    for _ in range(num):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = _random_colour(rng).tolist()
        if rng.random() < 0.6:  # a short bent stroke
            pts = np.array([[x, y]] + [[x, y] + rng.integers(-reach, reach + 1, size=2)
                                       for _ in range(int(rng.integers(1, 4)))], np.int32)
            cv2.polylines(image, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:  # a small blob
            axes = (int(rng.integers(1, reach // 2 + 2)), int(rng.integers(1, reach // 2 + 2)))
            cv2.ellipse(image, (x, y), axes, float(rng.integers(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def _fit_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scales a float polygon [N, 2] to span exactly the box [0, width-1] x [0, height-1]."""
    points = points - points.min(axis=0)
    points = points / np.maximum(points.max(axis=0), 1e-6) * [width - 1, height - 1]
    return np.round(points).astype(np.int32)


def _rotated(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_mask(rng: np.random.Generator, shape: str, width: int, height: int) -> np.ndarray:
    """Binary mask uint8 [height, width] (1 = object) of ``shape`` touching all four patch borders."""
    mask = np.zeros((height, width), np.uint8)
    centre, axes = ((width - 1) / 2, (height - 1) / 2), ((width - 1) / 2, (height - 1) / 2)

    def ellipse(value, cx, cy, ax, ay):
        cv2.ellipse(mask, (round(cx * 16), round(cy * 16)), (round(ax * 16), round(ay * 16)),
                    0, 0, 360, value, -1, cv2.LINE_8, 4)

    if shape in ("circle", "ring", "crescent"):
        ellipse(1, *centre, *axes)
        if shape == "ring":
            r = rng.uniform(0.45, 0.7)
            ellipse(0, *centre, axes[0] * r, axes[1] * r)
        elif shape == "crescent":
            r, dx = rng.uniform(0.7, 0.9), rng.uniform(0.35, 0.6) * rng.choice([-1, 1])
            ellipse(0, centre[0] + dx * axes[0], centre[1], axes[0] * r, axes[1] * r)
        return mask
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "square":
        points = _rotated(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), rng.uniform(-0.35, 0.35))
    elif shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        t = angle + 2 * math.pi * np.arange(n) / n + rng.uniform(-0.15, 0.15, size=n)
        points = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif shape == "star":
        t = angle + math.pi * np.arange(10) / 5
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        points = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif shape == "cross":
        a = rng.uniform(0.18, 0.3)  # half arm width, arms reach +-1
        q = [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
             [-1, -a], [-a, -a]]
        points = _rotated(np.array(q, float), rng.uniform(-0.25, 0.25))
    else:
        raise ValueError(f"Unknown shape {shape!r}")
    cv2.fillPoly(mask, [_fit_polygon(points, width, height)], 1)
    return mask


def texture_patch(rng: np.random.Generator, texture: str, colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fills the patch of ``mask`` [h, w] with ``texture`` in ``colour``; returns uint8 BGR [h, w, 3]."""
    height, width = mask.shape
    side = max(height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    dark = _shade(colour, -int(rng.integers(70, 130)))
    if texture == "solid":  # vertical shading, brighter at the top
        shade = (yy * int(rng.integers(20, 50))) // max(height, 1)
        return np.clip(colour.astype(np.int32) - shade[..., None], 0, 255).astype(np.uint8)
    if texture == "checkered":
        period = max(2, side // int(rng.integers(3, 7)))
        on = ((yy // period + xx // period) % 2).astype(bool)
    elif texture == "striped":
        a, b = [(1, 1), (1, -1), (1, 0), (0, 1), (2, 1), (1, 2)][int(rng.integers(6))]
        period = max(2, side // int(rng.integers(4, 9)))
        on = (((a * xx + b * yy) // period) % 2).astype(bool)
    elif texture == "dotted":
        period = max(4, side // int(rng.integers(4, 8)))
        radius2 = max(1, (period * period) // 10)
        on = (xx % period - period // 2) ** 2 + (yy % period - period // 2) ** 2 > radius2
    elif texture == "outlined":
        k = max(1, side // 12)
        on = cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0).astype(bool)
    elif texture == "gradient":  # radial, light centre to dark rim
        d2 = (2 * xx - width + 1) ** 2 + (2 * yy - height + 1) ** 2
        t = (d2 * 255 // max(int(d2.max()), 1))[..., None]
        return ((colour.astype(np.int32) * (255 - t) + dark.astype(np.int32) * t) // 255).astype(np.uint8)
    else:
        raise ValueError(f"Unknown texture {texture!r}")
    return np.where(on[..., None], colour, dark).astype(np.uint8)


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int = 8,
                 scale_range: Tuple[float, float] = (0.08, 0.6),
                 min_visible: float = 0.3) -> Tuple[np.ndarray, List[Dict]]:
    """Renders one scene.

    Args:
        rng: the image's generator (``np.random.default_rng(seed + index)``).
        height, width: image size in pixels.
        max_objects: objects per scene are drawn uniformly from [2, max_objects].
        scale_range: object side (sqrt of box area) as a fraction of the short image side, log-uniform.
        min_visible: objects with a smaller visible fraction of their pixels are not annotated.

    Returns:
        image: uint8 BGR [height, width, 3].
        objects: list of dicts, back to front, with ``category`` (index into :data:`CATEGORY_STYLES`),
            ``bbox`` (visible box, COCO [x, y, w, h] absolute pixels, pixel-inclusive),
            ``area`` (visible pixel count) and ``visibility`` (visible / full pixel count).
    """
    image = render_background(rng, height, width)
    draw_clutter(rng, image, int(rng.integers(4, 16)))
    owner = np.full((height, width), -1, np.int16)
    short = min(height, width)
    placed = []  # (category, x0, y0, w, h, full pixel count)
    for k in range(int(rng.integers(2, max_objects + 1))):
        category = int(rng.integers(len(CATEGORY_STYLES)))
        _, shape, texture, hue = CATEGORY_STYLES[category]
        side = short * math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1])))
        aspect = rng.uniform(*_ASPECT.get(shape, (0.7, 1.4)))
        w = int(np.clip(round(side * math.sqrt(aspect)), 4, width))
        h = int(np.clip(round(side / math.sqrt(aspect)), 4, height))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        mask = shape_mask(rng, shape, w, h)
        patch = texture_patch(rng, texture, hsv_colour(rng, hue), mask)
        on = mask.astype(bool)
        image[y0:y0 + h, x0:x0 + w][on] = patch[on]
        owner[y0:y0 + h, x0:x0 + w][on] = k
        placed.append((category, x0, y0, w, h, int(on.sum())))

    objects = []
    for k, (category, x0, y0, w, h, full) in enumerate(placed):
        visible = owner[y0:y0 + h, x0:x0 + w] == k
        count = int(visible.sum())
        if count == 0 or count < min_visible * full:
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        x, y = x0 + int(cols[0]), y0 + int(rows[0])
        bbox = [x, y, int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        objects.append({"category": category, "bbox": bbox, "area": count, "visibility": count / full})
    return image, objects
