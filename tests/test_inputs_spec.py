"""The input spec: raw images and table rows → a dataset's stored form, the same functions on both sides."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pareto_ray.data.cache import from_table, to_table
from pareto_ray.data.factory import dataset_from
from pareto_ray.inputs_spec import (
    InputError,
    InputSpec,
    TabularEncoder,
    decode_image,
    encode_png,
    infer_kind,
    normalize,
    read_npy,
    to_stored_image,
)
from pareto_ray.tasks import Task

RGB = (3, 16, 16)


def png_of(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` RGB pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_png_round_trip_is_exact_for_gray_and_rgb():
    rng = np.random.default_rng(0)
    for shape in ((1, 28, 28), RGB):
        stored = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(decode_image(encode_png(stored), shape, 10_000), stored)


def test_images_are_converted_and_resized_as_the_dataset_stores_them():
    rgba = Image.fromarray(np.dstack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30, 40)]), "RGBA")
    out = decode_image(png_of(rgba), RGB, 10_000)  # alpha dropped, resized 30×20 → 16×16
    assert out.shape == RGB and out.dtype == np.uint8 and set(out[:, 0, 0]) == {10, 20, 30}
    assert np.array_equal(out, to_stored_image(rgba, RGB))  # one function: the dataset's and the server's
    gray = Image.fromarray(np.full((16, 16), 99, np.uint8), "L")
    assert np.array_equal(decode_image(png_of(gray), RGB, 10_000), np.full(RGB, 99, np.uint8))  # gray replicated
    jpeg = decode_image(png_of(Image.fromarray(np.full((16, 16, 3), 128, np.uint8)), "JPEG", quality=95), RGB, 10_000)
    assert np.abs(jpeg.astype(int) - 128).max() <= 2


@pytest.mark.parametrize("data, status, words", [
    (b"", 422, "empty"),
    (b"not an image at all", 422, "unreadable"),
    (png_header_only(10_000, 10_000), 413, "over the limit"),  # 100 megapixels declared: refused from the header
    (png_of(Image.new("RGB", (16, 16)), "GIF"), 422, "unreadable"),  # GIF: not a format taken from clients
    (png_of(Image.fromarray(np.zeros((8, 8), np.uint16))), 422, "8 bits"),  # 16-bit gray would be clipped
], ids=["empty", "garbage", "100-megapixel header", "gif", "16-bit"])
def test_bad_images_are_refused_before_decoding(data, status, words):
    with pytest.raises(InputError) as err:
        decode_image(data, RGB, 16_777_216)
    assert err.value.status == status and words in err.value.message and "PNG or JPEG" in err.value.expected


def test_a_decompression_bomb_and_a_truncated_image_are_refused():
    bomb = png_of(Image.new("L", (6000, 6000)))  # 36 megapixels in about 40 kB
    assert len(bomb) < 100_000
    with pytest.raises(InputError) as err:
        decode_image(bomb, RGB, 16_777_216)
    assert err.value.status == 413
    noisy = encode_png(np.random.default_rng(1).integers(0, 256, RGB, dtype=np.uint8))
    with pytest.raises(InputError, match="cannot be decoded"):
        decode_image(noisy[: len(noisy) // 2], RGB, 10_000)


def test_npy_is_read_without_pickles():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert read_npy(buf.getvalue(), 1000).shape == (2, 3)
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for data, words in ((obj.getvalue(), "readable"), (b"\x93NUMPY garbage", "readable"), (b"", "empty")):
        with pytest.raises(InputError, match=words):
            read_npy(data, 1000)
    with pytest.raises(InputError) as err:
        read_npy(buf.getvalue(), 10)
    assert err.value.status == 413


TABLE = {"alcohol": [12.0, 13.0, 14.0, None], "color": ["red", "white", "red", "rose"], "organic": [True, False,
                                                                                                     True, False]}


def test_tabular_encoder_fits_encodes_and_round_trips():
    enc = TabularEncoder.fit(TABLE, categorical=["color"], boolean=["organic"])
    assert enc.width == 5 and enc.feature_names() == ["alcohol", "color=red", "color=rose", "color=white", "organic"]
    x = enc.encode_columns(TABLE)
    assert x.shape == (4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:3, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)  # z-scored on the known values
    assert x[3, 0] == 0.0 and enc.columns[0].nullable  # a missing number is the mean
    assert x[1].tolist()[1:] == [0.0, 0.0, 1.0, 0.0]
    again = TabularEncoder.from_dict(enc.to_dict())
    assert again == enc
    rows = [{"alcohol": 13.0, "color": "white", "organic": False}]
    assert np.array_equal(again.encode_rows(rows), x[1:2])


@pytest.mark.parametrize("row, where, words", [
    ({"alcohol": 1.0, "color": "blue", "organic": True}, [0, "color"], "no category 'blue'"),
    ({"alcohol": 1.0, "organic": True}, [0, "color"], "missing"),
    ({"alcohol": "strong", "color": "red", "organic": True}, [0, "alcohol"], "a finite number"),
    ({"alcohol": 1.0, "color": "red", "organic": 1}, [0, "organic"], "true or false"),
    ({"alcohol": 1.0, "color": "red", "organic": True, "year": 2020}, [0, "year"], "unknown column"),
    ({"alcohol": float("inf"), "color": "red", "organic": True}, [0, "alcohol"], "finite"),
])
def test_bad_rows_name_the_column(row, where, words):
    enc = TabularEncoder.fit(TABLE, categorical=["color"], boolean=["organic"])
    with pytest.raises(InputError) as err:
        enc.encode_rows([row])
    assert err.value.where == where and words in err.value.message and err.value.status == 422


def test_the_spec_is_saved_by_the_split_and_read_back():
    enc = TabularEncoder.fit(TABLE, categorical=["color"], boolean=["organic"])
    x = torch.from_numpy(enc.encode_columns(TABLE))
    tasks = [Task("quality", "regression")]
    data = dataset_from({"tasks": tasks, "encoder": enc, **{s: (x, [torch.zeros(4)]) for s in ("train", "val", "test")}},
                        "test")
    d = data.train.input_spec()
    assert d["kind"] == "tabular" and d["shape"] == [5] and len(d["columns"]) == 3
    spec = InputSpec.from_dict(d)
    assert spec.encoder == enc and InputSpec.from_dict(spec.to_dict()) == spec
    assert from_table(to_table(data)).train.input_spec() == d  # the Parquet cache keeps the columns
    with pytest.raises(ValueError, match="features"):
        dataset_from({"tasks": tasks, "encoder": enc, **{s: (x[:, :4], [torch.zeros(4)]) for s in
                                                          ("train", "val", "test")}}, "test")


def test_kind_is_inferred_for_old_checkpoints_and_normalization_is_per_channel():
    assert infer_kind([1, 28, 28], "uint8") == "image" and infer_kind([1, 28, 28], "float32") == "tensor"
    old = InputSpec.from_dict({"shape": [3, 4, 4], "dtype": "uint8", "scale": 1 / 255, "mean": [0.5, 0.4, 0.3],
                               "std": [0.2, 0.2, 0.2]})
    assert old.kind == "image" and old.channels == 3 and old.size == (4, 4)
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(old.normalize(x)[0, :, 0, 0], torch.tensor([2.5, 3.0, 3.5]))
    assert torch.equal(normalize(x, 1 / 255, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)), old.normalize(x))
