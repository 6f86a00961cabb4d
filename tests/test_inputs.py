"""Odd and broken files, generated here: each decodes to RGB or fails with one line naming the file."""

import io
import struct

import numpy as np
import pytest
from conftest import encode, pattern
from PIL import Image, ImageColor

from dynviz import inputs
from dynviz.explain import Heatmap
from dynviz.inputs import InputError, load_image
from dynviz.viz.image import DISPLAY_SIDE, LEGEND_HEIGHT, SMALLEST_PICTURE, attribution_picture, boxed_picture, preview
from dynviz.viz.style import exit_color


def png_16bit_grey() -> bytes:
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)  # 0 .. 65504
    return encode(Image.fromarray(ramp), "PNG")


def float_tiff() -> bytes:
    return encode(Image.fromarray(np.linspace(-3.0, 5.0, 48 * 24, dtype=np.float32).reshape(24, 48)), "TIFF")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), color) for color in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return encode(pattern(80, 40), "JPEG", exif=exif)


def palette_with_transparency() -> bytes:
    image = pattern(50, 40).convert("P")
    return encode(image, "PNG", transparency=0)


GOOD = {
    "photo.jpg": (lambda: encode(pattern(), "JPEG"), ()),
    "photo.webp": (lambda: encode(pattern(), "WEBP"), ()),
    "photo.bmp": (lambda: encode(pattern(), "BMP"), ()),
    "cmyk.jpg": (lambda: encode(pattern().convert("CMYK"), "JPEG"), ()),
    "rgba.png": (lambda: encode(pattern().convert("RGBA"), "PNG"), ("transparent",)),
    "grey-alpha.png": (lambda: encode(pattern().convert("LA"), "PNG"), ("transparent",)),
    "palette.png": (palette_with_transparency, ("transparent",)),
    "one-bit.png": (lambda: encode(pattern().convert("1"), "PNG"), ()),
    "depth16.png": (png_16bit_grey, ("16-bit",)),
    "float.tif": (float_tiff, ("floating-point",)),
    "animated.gif": (animated_gif, ("3 frames", "the first is analysed")),
    "really-a-png.jpg": (lambda: encode(pattern(), "PNG"), ("content is PNG",)),
}


@pytest.mark.parametrize("name", GOOD)
def test_odd_but_valid_files_become_rgb_with_a_note(name):
    make, expected_notes = GOOD[name]
    image = load_image(make(), name)
    assert image.image.mode == "RGB"
    assert image.name == name and len(image.digest) == 64
    for expected in expected_notes:
        assert any(expected in note for note in image.notes), image.notes


def test_exif_orientation_is_applied():
    assert load_image(rotated_jpeg(), "rotated.jpg").size == (40, 80)


def test_large_jpegs_are_read_at_a_reduced_scale_with_the_same_picture(monkeypatch):
    monkeypatch.setattr(inputs, "DECODED_SIDE", 64)  # as a 12-megapixel photo is against the real 1024
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(pattern(300, 200), "JPEG", quality=95, exif=exif)
    image = load_image(data, "big.jpg")
    assert image.size == (100, 150) and image.file_size == (200, 300) and not image.notes
    full = Image.open(io.BytesIO(data)).convert("RGB").reduce(2).transpose(Image.Transpose.ROTATE_270)
    difference = np.abs(np.asarray(image.image, float) - np.asarray(full, float)).mean()
    assert difference < 4, difference
    small = load_image(encode(pattern(120, 120), "JPEG"), "small.jpg")
    assert small.size == (120, 120) and small.file_size is None


def test_the_picture_sent_to_the_browser_is_shrunk_once_per_photo():
    large, small = pattern(1600, 900), pattern(64, 48)
    shown = preview(large)
    assert max(shown.size) == DISPLAY_SIDE and preview(large) is shown
    assert preview(small) is small


def test_an_attribution_is_drawn_over_the_part_the_network_saw_with_its_box_and_a_legend():
    photo = Image.new("RGB", (1280, 960), (0, 0, 255))
    values = np.zeros((8, 8))
    values[:4] = 1.0  # the top half relevant
    seen = (320, 160, 960, 800)
    picture = np.asarray(attribution_picture(photo, Heatmap(values, seen), "Grad-CAM")).astype(int)
    assert picture.shape == (480 + LEGEND_HEIGHT, 640, 3)  # the photo as the browser gets it, the legend below
    box_colour = np.array(ImageColor.getrgb(exit_color(0)))
    assert (picture[240, 160] == box_colour).all()  # the outline, at the box's left edge (input pixels / 2)
    assert picture[150, 320, 0] > 150 and picture[350, 320, 0] < 20  # red over the top half only: map, not photo
    assert (picture[20, 20] == (0, 0, 255)).all()  # outside the box: the photo, untouched
    plain = np.asarray(boxed_picture(photo, [(seen, "seen", exit_color(0))]))
    assert plain.shape == (480, 640, 3)  # no map, no legend


def test_a_small_input_is_drawn_enlarged_with_visible_pixels():
    cifar = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    picture = boxed_picture(cifar, [])
    assert max(picture.size) >= SMALLEST_PICTURE and picture.width % 32 == 0
    factor = picture.width // 32
    assert picture.getpixel((factor * 5, factor * 7)) == picture.getpixel((factor * 5 + factor - 1, factor * 7))


def test_transparent_areas_are_composited_on_white():
    transparent = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(encode(transparent, "PNG"), "clear.png").image.getpixel((5, 5)) == (255, 255, 255)


def test_16_bit_images_are_rescaled_not_clipped():
    pixels = np.asarray(load_image(png_16bit_grey(), "depth16.png").image)[..., 0]
    assert pixels.max() == 255 and pixels.min() == 0
    assert len(np.unique(pixels)) > 200  # clipping at 255 would leave almost every pixel white


def test_float_images_are_rescaled_by_their_range():
    pixels = np.asarray(load_image(float_tiff(), "float.tif").image)[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255


def truncated_jpeg() -> bytes:
    data = encode(pattern(200, 200), "JPEG")
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(encode(pattern(), "PNG"))
    data[60:120] = b"\x00" * 60
    return bytes(data)


def bomb_png() -> bytes:
    return encode(Image.new("1", (9000, 6000)), "PNG")  # 54 MP of nothing: a few kB on disk


def bmp_with_absurd_header() -> bytes:
    header = encode(Image.new("RGB", (4, 4)), "BMP")
    return header[:18] + struct.pack("<ii", 200000, 200000) + header[26:]


BAD = {
    "empty.jpg": (lambda: b"", "empty"),
    "notes.jpg": (lambda: b"these are my holiday notes, not a photo", "not an image"),
    "truncated.jpg": (truncated_jpeg, "corrupt or truncated"),
    "corrupt.png": (corrupt_png, "corrupt or truncated"),
    "bomb.png": (bomb_png, "megapixels"),
    "absurd.bmp": (bmp_with_absurd_header, "decompression bomb"),
    "vector.svg": (lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
}


@pytest.mark.parametrize("name", BAD)
def test_broken_files_get_one_line_naming_the_file(name):
    make, reason = BAD[name]
    with pytest.raises(InputError) as error:
        load_image(make(), name)
    message = str(error.value)
    assert message.startswith(f"{name}:") and reason in message and "\n" not in message


def test_pillows_own_bomb_guard_stays_on(monkeypatch):
    monkeypatch.setattr(inputs, "MAX_PIXELS", 10**12)
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(encode(Image.new("1", (12000, 12000)), "PNG"), "bomb.png")


def test_files_over_the_size_cap_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(inputs, "MAX_BYTES", 1000)
    with pytest.raises(InputError, match="over the"):
        load_image(encode(pattern(200, 200), "BMP"), "big.bmp")


def test_a_file_name_is_only_a_label(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = load_image(encode(pattern(), "PNG"), "../../etc/passwd")
    assert image.name == "../../etc/passwd"
    assert list(tmp_path.iterdir()) == []
