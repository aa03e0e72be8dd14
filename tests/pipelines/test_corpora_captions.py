import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

import pipelines.corpora.captions  # noqa: F401  (registers tfsuite_captions)
from pipelines.corpora import captions, emoji_catalog
from pipelines.corpora.sources import MissingSourceError
from pipelines.corpora.splits import assign_split
from tests.pipelines.corpora_testdata import load_all, prepare, text

EMOJI_TEST = """\
# group: Animals & Nature
# subgroup: animal-mammal
1F431                                                  ; fully-qualified     # 🐱 E0.6 cat face
1F98A                                                  ; fully-qualified     # 🦊 E3.0 fox
# subgroup: hand-fingers-open
1F44B 1F3FD                                            ; fully-qualified     # 👋🏽 E1.0 waving hand: medium skin tone
263A                                                   ; unqualified         # ☺ E0.6 smiling face
# group: Flags
# subgroup: country-flag
1F1EF 1F1F5                                            ; fully-qualified     # 🇯🇵 E0.6 flag: Japan
"""
_RELATION = re.compile(r" (to the left of|to the right of|above|below) ")


def test_parse_keeps_plain_named_emoji():
    parsed = emoji_catalog.parse(EMOJI_TEST)
    assert [(e.char, e.name, e.group) for e in parsed] == [("🐱", "cat face", "Animals & Nature"), ("🦊", "fox", "Animals & Nature")]


def test_noun_phrases():
    assert captions.noun_phrase("cat face") == "a cat face"
    assert captions.noun_phrase("owl") == "an owl"
    assert captions.noun_phrase("unicorn") == "a unicorn"
    assert captions.noun_phrase("grapes") == "some grapes"
    assert captions.noun_phrase("grinning face with big eyes") == "a grinning face with big eyes"
    assert captions.noun_phrase("house", definite=True) == "the house"
    assert captions.noun_phrase("Statue of Liberty") == "the Statue of Liberty"
    assert captions.noun_phrase("hourglass done") == "an hourglass done"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    prepare("tfsuite_captions", root, num_scenes=80)
    return load_all("tfsuite_captions", root)


def _center(box):
    ymin, xmin, ymax, xmax = box
    return (xmin + xmax) / 2, (ymin + ymax) / 2


def _check_relation(relation, a, b):
    (ax, ay), (bx, by) = _center(a), _center(b)
    dx, dy = {"to the left of": (bx - ax, 0), "to the right of": (ax - bx, 0), "above": (0, by - ay), "below": (0, ay - by)}[relation]
    # One grid cell (about a third of the image) apart along the relation's axis, aligned on the other.
    if dx:
        assert dx > 0.2 and abs(ay - by) < 0.12, (relation, a, b)
    else:
        assert dy > 0.2 and abs(ax - bx) < 0.12, (relation, a, b)


def test_images_captions_and_boxes_agree(data):
    examples = [ex for split in data.values() for ex in split]
    assert len(examples) >= 75  # 80 draws, a few duplicate captions at most
    counts = set()
    for ex in examples:
        image, caption = ex["image"], text(ex["caption"])
        names = [text(n) for n in ex["objects"]["name"]]
        boxes = ex["objects"]["bbox"]
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert 1 <= len(names) <= 3 and boxes.shape == (len(names), 4)
        assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        for name, box in zip(names, boxes):
            assert name in caption, (name, caption)
            y0, x0, y1, x1 = (box * 128).round().astype(int)
            assert image[y0:y1, x0:x1].std() > 10, f"nothing drawn where {name!r} should be"
        relations = _RELATION.findall(caption)
        assert len(relations) == len(names) - 1, caption
        if len(names) >= 2:
            _check_relation(relations[0], boxes[0], boxes[1])
        if len(names) == 3:
            assert caption.endswith(f"{relations[1]} {captions.noun_phrase(names[1], definite=True)}")
            _check_relation(relations[1], boxes[2], boxes[1])
        if len(names) == 1:
            x, y = _center(boxes[0])
            if "left" in caption:
                assert x < 0.4
            if "right" in caption:
                assert x > 0.6
            if "top" in caption:
                assert y < 0.4
            if "bottom" in caption:
                assert y > 0.6
        counts.add(len(names))
    assert counts == {1, 2, 3}


def test_split_by_emoji_set(data):
    assert all(data[split] for split in data)
    for split, exs in data.items():
        for ex in exs:
            names = sorted(text(n) for n in ex["objects"]["name"])
            assert text(ex["source_item"]) == " + ".join(names)
            assert assign_split(" + ".join(names)) == split
    captions_seen = [text(ex["caption"]) for exs in data.values() for ex in exs]
    assert len(captions_seen) == len(set(captions_seen))


def test_missing_sources_name_the_debian_package(tmp_path):
    with pytest.raises(MissingSourceError, match=r"unicode-data"):
        prepare("tfsuite_captions", tmp_path / "a", emoji_test=tmp_path / "emoji-test.txt")
    (tmp_path / "emoji-test.txt").write_text(EMOJI_TEST)
    with pytest.raises(MissingSourceError, match=r"apt-get install --no-install-recommends fonts-noto-color-emoji"):
        prepare("tfsuite_captions", tmp_path / "b", emoji_test=tmp_path / "emoji-test.txt", font=tmp_path / "none.ttf")
    assert not tfds.builder("tfsuite_captions", data_dir=str(tmp_path / "b")).is_prepared()
