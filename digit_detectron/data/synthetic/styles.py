"""
The style split of the synthetic generator: two disjoint sets of glyph sources (font families),
colour schemes, background textures and blur kinds. Training images are rendered in-style; the
validation and ``test_ood`` splits out-of-style, so their numbers measure how the model reads digits
in fonts, colours, backgrounds and blurs it never trained on. ``valid_instyle`` measures the same
model in the training style. Each split's style is recorded in its json ``info``.
"""

import os
from dataclasses import asdict, dataclass, replace

from .glyphs import FONT_KINDS, collect_fonts

# Glyph sources (``glyphs.render_source``): sans-serif and monospace families, Computer Modern's
# upright faces, four Hershey faces, seven-segment and a sans stencil for training ...
IN_STYLE_SOURCES = (
    "ttf:DejaVuSans.ttf",
    "ttf:DejaVuSans-Bold.ttf",
    "ttf:DejaVuSans-Oblique.ttf",
    "ttf:DejaVuSans-BoldOblique.ttf",
    "ttf:DejaVuSansMono.ttf",
    "ttf:DejaVuSansMono-Bold.ttf",
    "ttf:DejaVuSansMono-BoldOblique.ttf",
    "ttf:cmss10.ttf",
    "ttf:cmr10.ttf",
    "ttf:cmb10.ttf",
    "ttf:cmtt10.ttf",
    "hershey:simplex",
    "hershey:simplex-italic",
    "hershey:duplex",
    "hershey:complex",
    "hershey:triplex",
    "segment7",
    "stencil:DejaVuSans-Bold.ttf",
)
# ... and serif families (DejaVu Serif, STIX), Computer Modern italic, the other Hershey faces
# (plain, small, script), slanted seven-segment, dot matrix and a serif stencil held out.
OUT_OF_STYLE_SOURCES = (
    "ttf:DejaVuSerif.ttf",
    "ttf:DejaVuSerif-Bold.ttf",
    "ttf:DejaVuSerif-Italic.ttf",
    "ttf:DejaVuSerif-BoldItalic.ttf",
    "ttf:STIXGeneral.ttf",
    "ttf:STIXGeneralBol.ttf",
    "ttf:STIXGeneralItalic.ttf",
    "ttf:STIXGeneralBolIta.ttf",
    "ttf:cmti10.ttf",
    "hershey:plain",
    "hershey:complex_small",
    "hershey:script_simplex",
    "hershey:triplex-italic",
    "segment7-slant",
    "dotmatrix",
    "stencil:DejaVuSerif-Bold.ttf",
)


@dataclass(frozen=True)
class Style:
    """What one side of the style split may use; names refer to ``glyphs``, ``textures`` and ``render``."""

    name: str
    glyph_sources: tuple
    palette: tuple  # names of textures.PALETTE entries
    hue_range: tuple  # (lo, hi) of the random HSV hues, 0..1
    textures: tuple  # names of textures.TEXTURES, and "photo" for a crop of one of ``photos``
    blurs: tuple  # kinds of render._blur
    # How often a number's glyphs are sheared into synthetic italics (render.slant_glyphs); a rendering
    # effect, not a style of its own: the held-out style keeps its own italic fonts and draws none.
    glyph_slant_prob: float = 0.0
    photos: tuple = ()  # names of textures.PHOTOS, drawn by the "photo" texture
    photo_contrast: tuple = (0.1, 0.4)  # range of a photo's grey-level contrast (textures.photo)
    # Neighbouring glyphs kept apart where the annotators' boxes overlap (render._keep_apart): real
    # digits stand side by side. False draws each glyph as wide as its box allows, over its neighbour's
    # ink where the boxes overlap (the generator before 2026-12-06; recorded, so such data is made again).
    glyphs_apart: bool = True

    def info(self):
        """The style as json-ready data (the dataset json's ``info.style``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


IN_STYLE = Style(
    name="in-style",
    glyph_sources=IN_STYLE_SOURCES,
    palette=("white", "cream", "black", "brass", "brick red", "plate blue", "dark green"),
    hue_range=(0.0, 0.5),
    textures=("painted_wall", "siding", "bricks", "scenery", "photo", "clutter"),
    blurs=("gaussian", "low_resolution"),
    glyph_slant_prob=0.25,  # recipe log, run 10: out-of-style valid 81.75 -> 83.25%, test_ood 84.0 -> 84.0%
    photos=("astronaut", "brick", "chelsea", "coffee", "grass", "motorcycle", "rocket"),
    # Photos shown more strongly (was 0.1-0.4) and the "clutter" walls: recipe log, run 15 (the
    # independent ruler +1.05 points over two trainings, the out-of-style split -0.35).
    photo_contrast=(0.1, 0.7),
)
OUT_OF_STYLE = Style(
    name="out-of-style",
    glyph_sources=OUT_OF_STYLE_SOURCES,
    palette=("beige", "grey", "aluminium", "wood brown", "red", "navy", "ivory"),
    hue_range=(0.5, 1.0),
    textures=("wood", "tiles", "stucco", "foliage"),
    blurs=("motion", "defocus"),
)
STYLES = {s.name: s for s in (IN_STYLE, OUT_OF_STYLE)}
# The style each split is rendered in.
SPLIT_STYLES = {
    "train": IN_STYLE,
    "valid": OUT_OF_STYLE,
    "valid_instyle": IN_STYLE,
    "test": OUT_OF_STYLE,
    "test_ood": OUT_OF_STYLE,
    "test_wide": OUT_OF_STYLE,
    "free": OUT_OF_STYLE,
    "valid_free": OUT_OF_STYLE,
}


# Font families of the out-of-style glyph sources (and Computer Modern's math italic, a twin of its
# text italic): a font of the user's (``split_styles``) whose file name starts with one of these is
# held out too, whatever folder it comes from (e.g. the system's DejaVuSerifCondensed-Bold.ttf), so
# that no family is on both sides of the split.
HELD_OUT_FAMILIES = ("DejaVuSerif", "STIXGeneral", "cmti", "cmmi")


def held_out_family(font_path):
    """The out-of-style family (HELD_OUT_FAMILIES) that a font file belongs to by its name, or None."""
    name = os.path.basename(font_path).lower()
    return next((f for f in HELD_OUT_FAMILIES if name.startswith(f.lower())), None)


def font_files(style):
    """
    The font files (base names) behind a style's glyph sources; a stencil cut from a font uses that
    font's file, and a font given by its path (``ttf:/path/to/font.ttf``) counts by its file name.
    """
    kinds_and_files = (name.partition(":")[::2] for name in style.glyph_sources)
    return {os.path.basename(file) for kind, file in kinds_and_files if kind in FONT_KINDS}


def training_fonts(folders):
    """
    The fonts under ``folders`` that may join the training fonts (``glyphs.collect_fonts``: held-out
    families, fonts that draw no digits and the training fonts already there are skipped), and
    ``{path: why}`` of the skipped ones.
    """
    return collect_fonts(folders, held_out=held_out_family, known=font_files(IN_STYLE))


def split_styles(fonts=()):
    """
    The style of every split (SPLIT_STYLES) with ``fonts`` (font file paths that ``training_fonts``
    accepted) added to the in-style glyph sources; the out-of-style side is
    unchanged. A font of a held-out family (``held_out_family``) is a ValueError.
    """
    if not fonts:
        return dict(SPLIT_STYLES)
    held = [f for f in fonts if held_out_family(f)]
    if held:
        raise ValueError(f"{held[0]}: font family {held_out_family(held[0])} is held out for the out-of-style split")
    extra = tuple(f"ttf:{os.path.abspath(f)}" for f in fonts)
    in_style = replace(IN_STYLE, glyph_sources=IN_STYLE.glyph_sources + extra)
    return {split: in_style if style is IN_STYLE else style for split, style in SPLIT_STYLES.items()}


def overlap(a, b):
    """What two styles share, per field (empty lists for a disjoint split)."""
    fields = ("glyph_sources", "palette", "textures", "blurs", "photos")
    shared = {f: sorted(set(getattr(a, f)) & set(getattr(b, f))) for f in fields}
    shared["font_files"] = sorted(font_files(a) & font_files(b))
    lo, hi = max(a.hue_range[0], b.hue_range[0]), min(a.hue_range[1], b.hue_range[1])
    shared["hue_range"] = [lo, hi] if hi > lo else []
    return shared
