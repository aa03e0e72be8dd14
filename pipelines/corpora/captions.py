"""``tfsuite_captions``: rendered emoji scenes with sentence captions and boxes.

TFDS dataset builder for the image-captioning app (textbook 9.1 and chapter
10) and a detection toy set (7.3 DETR). Each 128x128 RGB image holds one to
three emoji (:mod:`pipelines.corpora.emoji_catalog`: Noto Color Emoji,
Unicode CLDR names) on a light background, laid out on a jittered 3x3 grid so
that the spatial relation in the caption is unambiguous:

* one emoji: "a cat face in the top left corner" (position on the grid);
* two: "a cat face to the left of a house with garden";
* three: "a cat face to the left of a house and a dog below the house".

Relations are ``to the left of``, ``to the right of``, ``above`` and
``below`` (centres one grid cell apart along one axis, within a few pixels
on the other). Every caption contains each rendered emoji's CLDR name.
Scenes come from a seeded generator (25,000 draws), deduplicated by caption;
split by the *set* of emoji names, 90/5/5, so a combination seen in training
never appears in validation or test (single emoji recur across splits in
other company, as words do across sentences).

Features::

    image        Image(shape=(128, 128, 3), PNG)
    caption      Text
    objects      Sequence({"name": Text, "emoji": Text, "bbox": BBox})   bbox = (ymin, xmin, ymax, xmax) in [0, 1]
    source_item  Text   the split key: sorted names joined by " + "

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.captions  # registers the builder

    ds = tfds.load("tfsuite_captions", split="train", data_dir="data/tfds")
    ex = next(iter(ds))   # ex["image"]: uint8 (128, 128, 3); ex["caption"]: b"a ... above a ..."
"""

from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import tensorflow_datasets as tfds

from pipelines.corpora import emoji_catalog
from pipelines.corpora.splits import SPLITS, assign_split

__all__ = ["TfsuiteCaptions", "Scene", "make_scenes", "render_scene", "noun_phrase", "IMAGE_SIZE", "NUM_SCENES"]

log = logging.getLogger(__name__)

IMAGE_SIZE = 128
NUM_SCENES = 25_000
RELATIONS = {"to the left of": (-1, 0), "to the right of": (1, 0), "above": (0, -1), "below": (0, 1)}
POSITIONS = {
    (0, 0): "in the top left corner", (1, 0): "at the top", (2, 0): "in the top right corner",
    (0, 1): "on the left", (1, 1): "in the center", (2, 1): "on the right",
    (0, 2): "in the bottom left corner", (1, 2): "at the bottom", (2, 2): "in the bottom right corner",
}  # fmt: skip
_CELL_CENTERS = (22, 64, 106)
_BACKGROUNDS = ((255, 255, 255), (245, 245, 220), (230, 240, 255), (235, 255, 235), (255, 240, 245), (240, 240, 240))
# Names whose bare form reads badly after an article; the phrase still contains the name.
_NOUN_OVERRIDES = {
    "tennis": "tennis ball", "bowling": "bowling ball and pins", "ping pong": "ping pong paddle",
    "badminton": "badminton racket", "lacrosse": "lacrosse stick", "field hockey": "field hockey stick",
    "ice hockey": "ice hockey stick", "ZZZ": "ZZZ sleeping sign", "kiss": "kiss symbol",
}  # fmt: skip
_MASS = {"money with wings", "popcorn", "bacon", "butter", "salt", "cooked rice", "spaghetti", "sushi", "bread", "ice", "shaved ice", "oden", "curry rice", "rice cracker", "canned food"}
_NO_ARTICLE = ("Santa Claus", "Mrs. Claus", "mx claus")
_DEFINITE = ("Statue of Liberty", "Tokyo tower")
_HEAD_END = (" with ", " of ", " in ", " showing ", " over ", " holding ", " blowing ", " lifting ", " and ", " on ")


def _is_plural(name):
    head = name
    for marker in _HEAD_END:
        head = head.split(marker)[0]
    last = head.split()[-1].lower()
    if last in ("people", "men", "women", "clothes"):
        return True
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "os"))


def noun_phrase(name, definite=False):
    """``"cat face"`` -> ``"a cat face"`` / ``"the cat face"``; ``"grapes"`` -> ``"some grapes"``."""
    if name in _NO_ARTICLE:
        return name
    noun = _NOUN_OVERRIDES.get(name, name)
    if name.endswith(("o’clock", "-thirty")):
        noun = f"clock showing {name}"
    if definite or name in _DEFINITE:
        return f"the {noun}"
    if name in _MASS or _is_plural(noun):
        return f"some {noun}"
    lowered = noun.lower()
    vowel = (lowered[0] in "aeiou" and not lowered.startswith(("uni", "use", "eu", "one", "ewe", "ura"))) or lowered.startswith("hour")
    return f"{'an' if vowel else 'a'} {noun}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """A scene to render: emoji ``(char, name)`` pairs, their centres and sizes, background and caption."""

    emoji: tuple
    centers: tuple
    sizes: tuple
    background: tuple
    caption: str

    @property
    def source_item(self):
        return " + ".join(sorted(name for _, name in self.emoji))


def _jitter(rng, value, size, amount=3):
    half = size // 2
    return min(IMAGE_SIZE - half - 1, max(half + 1, value + rng.randint(-amount, amount)))


def _scene(rng, catalog):
    count = rng.choices((1, 2, 3), weights=(0.15, 0.45, 0.40))[0]
    picked = rng.sample(catalog, count)
    emoji = tuple((e.char, e.name) for e in picked)
    background = rng.choice(_BACKGROUNDS)
    if count == 1:
        size = rng.randint(36, 56)
        cell = (rng.randint(0, 2), rng.randint(0, 2))
        anchors = (size // 2 + 2, IMAGE_SIZE // 2, IMAGE_SIZE - size // 2 - 2)
        center = (_jitter(rng, anchors[cell[0]], size), _jitter(rng, anchors[cell[1]], size))
        caption = f"{noun_phrase(picked[0].name)} {POSITIONS[cell]}"
        return Scene(emoji, (center,), (size,), background, caption)
    relations = rng.sample(list(RELATIONS), count - 1)
    # The anchor (second emoji) sits where every chosen relation stays on the grid.
    cells = [
        (x, y) for x in range(3) for y in range(3)
        if all(0 <= x + RELATIONS[r][0] <= 2 and 0 <= y + RELATIONS[r][1] <= 2 for r in relations)
    ]  # fmt: skip
    anchor = rng.choice(cells)
    grid = [(anchor[0] + RELATIONS[relations[0]][0], anchor[1] + RELATIONS[relations[0]][1]), anchor]
    if count == 3:
        grid.append((anchor[0] + RELATIONS[relations[1]][0], anchor[1] + RELATIONS[relations[1]][1]))
    sizes = tuple(rng.randint(30, 38) for _ in grid)
    centers = tuple((_jitter(rng, _CELL_CENTERS[x], s), _jitter(rng, _CELL_CENTERS[y], s)) for (x, y), s in zip(grid, sizes))
    a, b = picked[0].name, picked[1].name
    caption = f"{noun_phrase(a)} {relations[0]} {noun_phrase(b)}"
    if count == 3:
        caption += f" and {noun_phrase(picked[2].name)} {relations[1]} {noun_phrase(b, definite=True)}"
    return Scene(emoji, centers, sizes, background, caption)


def make_scenes(catalog, num_scenes=NUM_SCENES, seed=0):
    """Draw ``num_scenes`` scenes from ``catalog`` (list of :class:`~pipelines.corpora.emoji_catalog.Emoji`), unique by caption."""
    rng = random.Random(seed)
    scenes, seen = [], set()
    for _ in range(num_scenes):
        scene = _scene(rng, catalog)
        if scene.caption not in seen:
            seen.add(scene.caption)
            scenes.append(scene)
    return scenes


def render_scene(scene, renderer):
    """Return ``(image uint8 (128, 128, 3), boxes [(ymin, xmin, ymax, xmax)] in [0, 1])``."""
    from PIL import Image

    canvas = Image.new("RGBA", (IMAGE_SIZE, IMAGE_SIZE), scene.background + (255,))
    boxes = []
    for (char, _), (cx, cy), size in zip(scene.emoji, scene.centers, scene.sizes):
        tile = renderer.render(char, size)
        left, top = cx - size // 2, cy - size // 2
        canvas.alpha_composite(tile, (left, top))
        x0, y0, x1, y1 = tile.getchannel("A").getbbox()
        boxes.append(((top + y0) / IMAGE_SIZE, (left + x0) / IMAGE_SIZE, (top + y1) / IMAGE_SIZE, (left + x1) / IMAGE_SIZE))
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8), boxes


class TfsuiteCaptions(tfds.core.GeneratorBasedBuilder):
    """Emoji scenes with spatial-relation captions and bounding boxes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Noto Color Emoji (Debian bookworm), 25,000 scene draws, 128x128."}

    def __init__(self, *, emoji_test=emoji_catalog.EMOJI_TEST, font=emoji_catalog.EMOJI_FONT, num_scenes=NUM_SCENES, **kwargs):
        """``emoji_test``, ``font``: source files; ``num_scenes``: scene draws; the rest goes to TFDS."""
        self._emoji_test, self._font, self._num_scenes = emoji_test, font, num_scenes
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Features::")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "objects": tfds.features.Sequence(
                        {"name": tfds.features.Text(), "emoji": tfds.features.Text(), "bbox": tfds.features.BBoxFeature()}
                    ),
                    "source_item": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "caption"),
            homepage="https://github.com/googlefonts/noto-emoji",
            license="Noto Color Emoji: OFL-1.1; emoji names: Unicode licence",
        )

    def _split_generators(self, dl_manager):
        catalog = emoji_catalog.load(self._emoji_test)
        renderer = emoji_catalog.Renderer(self._font)  # fails early, naming the package, if the font is missing
        scenes = make_scenes(catalog, self._num_scenes)
        log.info("captions: %d unique scenes from %d emoji", len(scenes), len(catalog))
        by_split = {split: [] for split in SPLITS}
        for scene in scenes:
            by_split[assign_split(scene.source_item)].append(scene)
        return {split: self._generate_examples(by_split[split], renderer) for split in SPLITS}

    def _generate_examples(self, scenes, renderer):
        for scene in scenes:
            image, boxes = render_scene(scene, renderer)
            yield scene.caption, {
                "image": image,
                "caption": scene.caption,
                "objects": [
                    {"name": name, "emoji": char, "bbox": tfds.features.BBox(*box)}
                    for (char, name), box in zip(scene.emoji, boxes)
                ],
                "source_item": scene.source_item,
            }
