"""read_image: every image mode a photo folder holds comes out as correct 8-bit RGB/BGR; bad files name themselves."""

import os

import numpy as np
import pytest
from PIL import Image

from digit_detectron.data.image_io import ImageReadError, read_image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def quadrants(height=32, width=48):
    """An RGB array: red top-left, green top-right, blue bottom-left, white bottom-right."""
    rgb = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    rgb[:h, :w], rgb[:h, w:], rgb[h:, :w], rgb[h:, w:] = RED, GREEN, BLUE, (255, 255, 255)
    return rgb


def save(tmp_path, image, name="img.png", **kwargs):
    path = str(tmp_path / name)
    image.save(path, **kwargs)
    return path


def test_rgb_png_in_both_channel_orders(tmp_path):
    rgb = quadrants()
    path = save(tmp_path, Image.fromarray(rgb))
    out = read_image(path, "RGB")
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(path, "BGR"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(path), rgb[:, :, ::-1])  # BGR is the default


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    out = read_image(save(tmp_path, Image.fromarray(gray, "L")), "RGB")
    assert out.shape == (8, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_one_bit_image(tmp_path):
    bits = np.zeros((8, 8), bool)
    bits[:, 4:] = True
    out = read_image(save(tmp_path, Image.fromarray(bits)), "RGB")
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_palette_image_keeps_its_colours(tmp_path):
    rgb = quadrants()
    image = Image.fromarray(rgb).quantize(colors=4)
    path = save(tmp_path, image)
    assert Image.open(path).mode == "P" and "transparency" not in Image.open(path).info
    np.testing.assert_array_equal(read_image(path, "RGB"), rgb)


def test_palette_with_transparency_composites_onto_white(tmp_path):
    index = np.zeros((8, 8), np.uint8)
    index[:, 4:] = 1
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0] + list(BLUE) + [0, 0, 0] * 254)  # index 0 is black but transparent
    path = save(tmp_path, image, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    out = read_image(path, "RGB")
    assert (out[:, :4] == 255).all()  # not the black the palette holds
    assert (out[:, 4:] == BLUE).all()


def test_rgba_composites_onto_white(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = RED
    rgba[:, 0, 3], rgba[:, 1, 3], rgba[:, 2, 3] = 255, 0, 128
    out = read_image(save(tmp_path, Image.fromarray(rgba, "RGBA")), "RGB").astype(int)
    assert (out[:, 0] == RED).all()
    assert (out[:, 1] == 255).all()  # fully transparent red is white, not red
    assert (np.abs(out[:, 2] - (255, 127, 127)) <= 1).all()  # half-transparent: halfway to white


def test_la_composites_onto_white(tmp_path):
    la = np.zeros((4, 2, 2), np.uint8)
    la[:, :, 0] = 0
    la[:, 0, 1], la[:, 1, 1] = 255, 0
    path = save(tmp_path, Image.fromarray(la, "LA"))
    assert Image.open(path).mode == "LA"
    out = read_image(path, "RGB")
    assert (out[:, 0] == 0).all() and (out[:, 1] == 255).all()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)
    path = save(tmp_path, Image.fromarray(np.tile(ramp, (4, 1))))
    assert Image.open(path).mode == "I;16"
    out = read_image(path, "RGB")
    assert out.dtype == np.uint8 and out.shape == (4, 64, 3)
    row = out[0, :, 0].astype(int)
    assert row.min() == 0 and row.max() == 255  # clipping would make everything past 255 white
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 50
    np.testing.assert_allclose(row, ramp / 257.0, atol=1)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((32, 32, 4), np.uint8)  # C, M, Y, K: left white, right full cyan
    cmyk[:, 16:, 0] = 255
    path = save(tmp_path, Image.fromarray(cmyk, "CMYK"), name="img.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = read_image(path, "RGB").astype(int)
    assert out.shape == (32, 32, 3)
    assert (np.abs(out[:, :12] - 255) <= 8).all()
    assert (np.abs(out[:, 20:] - (0, 255, 255)) <= 8).all()


@pytest.mark.parametrize(
    "orientation, corners",
    [
        # Where the stored image's red / green / blue quadrants are seen once upright.
        (1, ("top-left", "top-right", "bottom-left")),
        (3, ("bottom-right", "bottom-left", "top-right")),  # stored upside down
        (6, ("top-right", "bottom-right", "top-left")),  # stored rotated 90 deg counter-clockwise
        (8, ("bottom-left", "top-left", "bottom-right")),  # stored rotated 90 deg clockwise
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, corners):
    stored = quadrants(height=40, width=64)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path, Image.fromarray(stored), name="img.jpg", exif=exif.tobytes(), quality=95)
    assert Image.open(path).getexif()[0x0112] == orientation
    out = read_image(path, "RGB").astype(int)
    assert out.shape == ((64, 40, 3) if orientation in (6, 8) else (40, 64, 3))
    h, w = out.shape[:2]
    at = {
        "top-left": out[h // 4, w // 4],
        "top-right": out[h // 4, 3 * w // 4],
        "bottom-left": out[3 * h // 4, w // 4],
        "bottom-right": out[3 * h // 4, 3 * w // 4],
    }
    for colour, corner in zip((RED, GREEN, BLUE), corners):
        assert (np.abs(at[corner] - colour) <= 24).all(), (corner, at[corner], colour)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "5.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"5\.png: empty \(zero-byte\) file"):
        read_image(str(path))


def test_truncated_png(tmp_path):
    path = save(tmp_path, Image.fromarray(quadrants(64, 64)), name="12.png")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(e.value).startswith(f"{path}: corrupt or truncated image (")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "7.png"
    path.write_text("not a picture\n")
    with pytest.raises(ImageReadError) as e:
        read_image(str(path))
    assert str(e.value) == f"{path}: not an image file (or an unsupported format)"


def test_missing_file(tmp_path):
    path = os.path.join(tmp_path, "missing", "3.png")
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(e.value) == f"{path}: file not found"
    assert isinstance(e.value, OSError)  # callers catching OSError still catch it
