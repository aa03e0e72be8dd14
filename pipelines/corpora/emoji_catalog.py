"""Named emoji and their images: Unicode's ``emoji-test.txt`` rendered with Noto Color Emoji.

Source reader for ``tfsuite_captions``. Two Debian packages:

* ``unicode-data``: ``/usr/share/unicode/emoji/emoji-test.txt`` lists every
  emoji with its group and its CLDR name, a short human-written caption
  ("kissing cat", "house with garden");
* ``fonts-noto-color-emoji``: ``NotoColorEmoji.ttf``, colour bitmaps drawn at
  font size 109 by Pillow (``embedded_color=True``).

:func:`load` keeps the fully-qualified emoji without skin-tone variants from
the concrete groups (faces, people, animals and nature, food, travel and
places, activities, objects); components, abstract symbols and flags are
left out, as are names with digits or colons ("keycap: 1", "flag: Japan").

Example::

    from pipelines.corpora import emoji_catalog

    catalog = emoji_catalog.load()
    cat = next(e for e in catalog if e.name == "cat face")
    image = emoji_catalog.Renderer().render(cat.char, 48)   # 48x48 RGBA PIL image
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipelines.corpora.sources import require_file

__all__ = ["Emoji", "EMOJI_TEST", "EMOJI_FONT", "GROUPS", "parse", "load", "Renderer"]

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
GROUPS = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects")
FONT_SIZE = 109  # the one size NotoColorEmoji's CBDT bitmaps are drawn at
_SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
_NAME = re.compile(r"^[A-Za-z][A-Za-z .'’-]*$")
_LINE = re.compile(r"^([0-9A-F ]+);\s*fully-qualified\s*#\s*(\S+)\s+E\d+\.\d+\s+(.+)$")


@dataclasses.dataclass(frozen=True)
class Emoji:
    """``char`` (the emoji string), ``name`` (CLDR short name), ``group`` and ``subgroup``."""

    char: str
    name: str
    group: str
    subgroup: str


def parse(text, groups=GROUPS):
    """Return the :class:`Emoji` of ``emoji-test.txt`` text kept by the filters in the module docstring."""
    out, group, subgroup = [], None, None
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        else:
            match = _LINE.match(line)
            if match is None or group not in groups:
                continue
            codepoints, _, name = match.groups()
            char = "".join(chr(int(cp, 16)) for cp in codepoints.split())
            if _SKIN_TONES & set(char) or not _NAME.match(name):
                continue
            out.append(Emoji(char, name.strip(), group, subgroup))
    return out


def load(path=EMOJI_TEST, groups=GROUPS):
    """Parse ``emoji-test.txt`` (Debian package ``unicode-data``)."""
    path = require_file(path, "unicode-data", "emoji list")
    return parse(path.read_text(encoding="utf-8"), groups)


class Renderer:
    """Draws emoji with Noto Color Emoji, cropped to their ink and resized.

    Args:
        font_path: str or Path, default :data:`EMOJI_FONT` (``fonts-noto-color-emoji``).
    """

    def __init__(self, font_path=EMOJI_FONT):
        from PIL import ImageFont

        path = require_file(font_path, "fonts-noto-color-emoji", "emoji font")
        self.font = ImageFont.truetype(str(path), FONT_SIZE)
        self._cache = {}

    def glyph(self, char):
        """The emoji at full bitmap size, RGBA, cropped to its non-transparent box (cached)."""
        from PIL import Image, ImageDraw

        if char not in self._cache:
            canvas = Image.new("RGBA", (2 * FONT_SIZE, 2 * FONT_SIZE), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((FONT_SIZE // 4, FONT_SIZE // 4), char, font=self.font, embedded_color=True)
            box = canvas.getchannel("A").getbbox()
            # A sequence the font lacks falls apart into several glyphs side by side.
            if box is None or box[2] - box[0] > 1.5 * FONT_SIZE:
                raise ValueError(f"the emoji font has no single glyph for {char!r} (U+{ord(char[0]):04X})")
            self._cache[char] = canvas.crop(box)
        return self._cache[char]

    def render(self, char, size):
        """The emoji scaled to fit a ``size`` x ``size`` box (aspect kept, centred), RGBA."""
        from PIL import Image

        glyph = self.glyph(char)
        scale = size / max(glyph.size)
        resized = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
        tile = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        tile.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
        return tile
