"""The procedural shapes dataset of AmusedKit's trained default model, and the checker that scores generated images.

Every image is 64×64: one shape (circle, square or triangle) of one of eight colours on a background of another,
its size and position drawn at random, rendered at 4× and box-filtered down (so edges are anti-aliased the same way
every time). Captions come from templates with synonyms; about one in ten is empty, for classifier-free guidance.
Everything is drawn from numpy's PCG64 with a fixed seed, so the same seed gives the same images and captions.

The checker reads only pixels: every pixel goes to its nearest palette colour; the background is the majority
colour of the border; the object is the majority colour of the rest; the shape is the ideal circle, square or
triangle (fitted to the object's bounding box) with the best intersection over union with the object's pixels.
"""

from __future__ import annotations

import numpy as np

SIZE = 64
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "yellow": (250, 225, 30),
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "orange": (255, 140, 0),
    "purple": (130, 40, 180),
}
SHAPES = ("circle", "square", "triangle")
# The object's bounding box as a fraction of the image side, drawn uniformly from this range.
SIZES = (0.45, 0.75)
# 0: size and position continuous. N > 0: the bounding box's side and corners on multiples of N pixels, at least N
# from the image's edge. 4 — the VQ-GAN's token cells — is the default: a square's edges then fall between tokens, so
# every token of a square is pure object or pure background, and the sampler (which draws each token on its own)
# cannot leave a square's edge ragged. Trained on continuous positions, the default drew squares as ragged blobs the
# checker took for circles (1 of 144 squares right, docs/trained-default.md).
GRID = 4

# (colour, shape) pairs never drawn in training: the evaluation measures how well colour and shape compose.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({
    ("red", "triangle"), ("blue", "circle"), ("yellow", "square"), ("purple", "triangle"),
})

COLOUR_WORDS = {c: [c] for c in COLOURS} | {"purple": ["purple", "violet"]}
SHAPE_WORDS = {"circle": ["circle", "disc"], "square": ["square", "box"], "triangle": ["triangle"]}
# The form the model must understand comes first and is drawn most often.
MAIN_TEMPLATE = "a {c} {s} on a {b} background"
OTHER_TEMPLATES = (
    "a {c} {s} on {b}",
    "{c} {s}, {b} background",
    "a {s} in {c} on a {b} background",
    "a {c} {s} against a {b} backdrop",
)
P_MAIN = 0.6
P_EMPTY = 0.1
# The share of images drawn outlined, captioned "… in outlined style" (filled ones "… in filled style" half the
# time), so that a model learns that a style word changes how a shape is drawn. train_default.py sets it for the
# transformer's images (--outlined-share, 0.3 by default; docs/trained-default.md); 0 here, so every other user of the
# dataset — the VQ's data, the evaluations — draws filled shapes with unchanged captions.
P_OUTLINED = 0.0


def caption(rng: np.random.Generator, colour: str, shape: str, background: str) -> str:
    if rng.random() < P_MAIN:
        template = MAIN_TEMPLATE
    else:
        template = OTHER_TEMPLATES[rng.integers(len(OTHER_TEMPLATES))]
    words = COLOUR_WORDS[colour]
    bwords = COLOUR_WORDS[background]
    swords = SHAPE_WORDS[shape]
    return template.format(c=words[rng.integers(len(words))], s=swords[rng.integers(len(swords))],
                           b=bwords[rng.integers(len(bwords))])


def shape_mask(shape: str, cx: float, cy: float, size: float, n: int) -> np.ndarray:
    """Boolean mask (n×n) of a shape whose bounding box is size×size centred at (cx, cy), in units of the grid."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    half = size / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half ** 2
    if shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    # An isosceles triangle pointing up, filling its bounding box: apex at the top centre, base at the bottom.
    top, bottom = cy - half, cy + half
    t = (y - top) / size  # 0 at the apex, 1 at the base
    return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= t * half)


def paint(mask: np.ndarray, colour: str, background: str) -> np.ndarray:
    """A 64×64×3 uint8 image from a mask at SUPERSAMPLE× resolution, box-filtered down (anti-aliased edges)."""
    cover = mask.astype(np.float64).reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))[..., None]
    fg = np.array(COLOURS[colour], np.float64)
    bg = np.array(COLOURS[background], np.float64)
    return np.rint(cover * fg + (1 - cover) * bg).astype(np.uint8)


def render(shape: str, colour: str, background: str, cx: float, cy: float, size: float) -> np.ndarray:
    """A 64×64×3 uint8 image (cx, cy, size in output pixels)."""
    n = SIZE * SUPERSAMPLE
    return paint(shape_mask(shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, size * SUPERSAMPLE, n), colour, background)


def draw(rng: np.random.Generator, *, allow_held_out: bool = False):
    """One random example: (image uint8 64×64×3, caption, attributes)."""
    names = list(COLOURS)
    while True:
        colour = names[rng.integers(len(names))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        if allow_held_out or (colour, shape) not in HELD_OUT:
            break
    background = names[rng.integers(len(names))]
    while background == colour:
        background = names[rng.integers(len(names))]
    if GRID:
        sides = [n for n in range(GRID, SIZE, GRID) if SIZES[0] * SIZE <= n <= SIZES[1] * SIZE]
        size = float(sides[rng.integers(len(sides))])
        corners = list(range(GRID, SIZE - GRID - int(size) + 1, GRID))
        cx = corners[rng.integers(len(corners))] + size / 2
        cy = corners[rng.integers(len(corners))] + size / 2
    else:
        size = float(rng.uniform(*SIZES) * SIZE)
        margin = size / 2 + 2
        cx = float(rng.uniform(margin, SIZE - margin))
        cy = float(rng.uniform(margin, SIZE - margin))
    image = render(shape, colour, background, cx, cy, size)
    text = "" if rng.random() < P_EMPTY else caption(rng, colour, shape, background)
    style = "filled"
    if P_OUTLINED:  # (no draws at all otherwise: the default's dataset is unchanged)
        if rng.random() < P_OUTLINED:
            style, image = "outlined", render_outlined(shape, colour, background, cx, cy, size)
        if text and (style == "outlined" or rng.random() < 0.5):
            text += f" in {style} style"
    return image, text, {"colour": colour, "shape": shape, "background": background, "cx": cx, "cy": cy, "size": size,
                         "style": style}


def dataset(seed: int, count: int, *, allow_held_out: bool = False):
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    texts, attrs = [], []
    for i in range(count):
        images[i], text, a = draw(rng, allow_held_out=allow_held_out)
        texts.append(text)
        attrs.append(a)
    return images, texts, attrs


# ---------------------------------------------------------------------------------------------------------------
# The checker.

_PALETTE = np.array(list(COLOURS.values()), np.float64)
_NAMES = list(COLOURS)


def classify(image: np.ndarray) -> dict:
    """Scores one generated image (H×W×3 uint8): background colour, object colour, shape and the object's pixels."""
    h, w, _ = image.shape
    d = ((image[:, :, None, :].astype(np.float64) - _PALETTE[None, None]) ** 2).sum(-1)
    labels = d.argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    rest = labels[labels != bg]
    if rest.size < 0.02 * h * w:  # no object at all
        return {"background": _NAMES[bg], "colour": None, "shape": None, "pixels": int(rest.size)}
    fg = int(np.bincount(rest, minlength=len(_NAMES)).argmax())
    mask = labels == fg
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    size = max(y1 - y0, x1 - x0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    best, best_iou = None, -1.0
    for shape in SHAPES:
        ideal = shape_mask(shape, cx, cy, size, max(h, w))[:h, :w]
        iou = (ideal & mask).sum() / max(1, (ideal | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, float(iou)
    return {"background": _NAMES[bg], "colour": _NAMES[fg], "shape": best, "iou": best_iou, "pixels": int(mask.sum())}


# ---------------------------------------------------------------------------------------------------------------
# A style the model never saw, for the fine-tuning demonstration (docs/finetune.md): the shape drawn as an outline
# whose stroke is 15% of its size (at least 6 pixels, what the VQ-GAN of the default model reconstructs), the
# inside left in the background colour.

def outline_mask(shape: str, cx: float, cy: float, size: float, n: int, stroke: float) -> np.ndarray:
    outer = shape_mask(shape, cx, cy, size, n)
    if shape == "triangle":
        # The inner triangle of an even stroke: its incentre sits lower than the box centre, and its sides move
        # inwards by the stroke (the height shrinks by 3 strokes for this 1:1 isosceles triangle, about).
        inner = shape_mask(shape, cx, cy + 0.4 * stroke, size - 2.6 * stroke, n)
    else:
        inner = shape_mask(shape, cx, cy, size - 2 * stroke, n)
    return outer & ~inner


def render_outlined(shape: str, colour: str, background: str, cx: float, cy: float, size: float) -> np.ndarray:
    """Like `render`, the shape as an outline."""
    n = SIZE * SUPERSAMPLE
    stroke = max(6.0, 0.15 * size)
    m = outline_mask(shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, size * SUPERSAMPLE, n, stroke * SUPERSAMPLE)
    return paint(m, colour, background)


def object_mask(image: np.ndarray) -> tuple[dict, np.ndarray] | None:
    """The checker's verdict on `image` and the pixels of the object's colour; None when there is no object."""
    c = classify(image)
    if c["colour"] is None:
        return None
    d = ((image[:, :, None, :].astype(np.float64) - _PALETTE[None, None]) ** 2).sum(-1)
    return c, d.argmin(-1) == _NAMES.index(c["colour"])


def hollowness(image: np.ndarray) -> float:
    """The share of the object's filled area that is not the object's colour: the enclosed pixels (not reachable
    from the border without crossing the object) over enclosed + object. A filled shape scores ~0, an outlined one
    0.4–0.7. 0 when there is no object."""
    found = object_mask(image)
    if found is None:
        return 0.0
    _, obj = found
    h, w = obj.shape
    reached = np.zeros_like(obj)
    stack = [(y, x) for y in range(h) for x in (0, w - 1)] + [(y, x) for x in range(w) for y in (0, h - 1)]
    stack = [(y, x) for y, x in stack if not obj[y, x]]
    for y, x in stack:
        reached[y, x] = True
    while stack:
        y, x = stack.pop()
        for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= yy < h and 0 <= xx < w and not reached[yy, xx] and not obj[yy, xx]:
                reached[yy, xx] = True
                stack.append((yy, xx))
    enclosed = int((~reached & ~obj).sum())
    return enclosed / max(1, enclosed + int(obj.sum()))


OUTLINED_THRESHOLD = 0.2  # hollowness above this counts as drawn in the outlined style


# A second unseen style, a pattern rather than a change of outline: the shape filled with horizontal stripes, bands
# of STRIPE pixels alternating between the object's colour and the background's, on rows fixed in the image (the
# VQ-GAN's token rows: every token of a band is one colour).
STRIPE = 4


def render_striped(shape: str, colour: str, background: str, cx: float, cy: float, size: float) -> np.ndarray:
    """Like `render`, the shape filled with horizontal stripes (image rows y with y // STRIPE even in its colour)."""
    n = SIZE * SUPERSAMPLE
    m = shape_mask(shape, cx * SUPERSAMPLE, cy * SUPERSAMPLE, size * SUPERSAMPLE, n)
    m &= ((np.arange(n) // (STRIPE * SUPERSAMPLE)) % 2 == 0)[:, None]
    return paint(m, colour, background)


def stripe_bands(image: np.ndarray) -> int:
    """The number of background bands across the object: runs of rows, between the object's first and last filled
    rows, where less than half of the fitted shape's row is the object's colour. A filled shape has 0, an outlined
    one at most 1 (its hollow middle), a striped one 2 or more. 0 when there is no object."""
    found = object_mask(image)
    if found is None:
        return 0
    c, obj = found
    h, w = obj.shape
    ys, xs = np.nonzero(obj)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ideal = shape_mask(c["shape"], (x0 + x1) / 2, (y0 + y1) / 2, max(y1 - y0, x1 - x0), max(h, w))[:h, :w]
    widths = ideal.sum(1)
    filled = [(obj[y] & ideal[y]).sum() >= 0.5 * widths[y] for y in range(h) if widths[y] >= 3]
    if not any(filled):
        return 0
    first, last = filled.index(True), len(filled) - 1 - filled[::-1].index(True)
    inner = filled[first:last + 1]
    return sum(1 for i in range(1, len(inner)) if not inner[i] and inner[i - 1])


STRIPED_MIN_BANDS = 2  # this many background bands or more counts as drawn in the striped style
