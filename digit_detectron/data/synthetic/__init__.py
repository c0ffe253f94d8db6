"""The embedded synthetic house-number generator: glyphs, layouts, textures, rendering, dataset writing."""

from .generate import draw_sample_grid, generate_dataset

__all__ = ["draw_sample_grid", "generate_dataset"]
