"""Observation preprocessing: area resize + luma, against an exact float reference."""

from __future__ import annotations

import numpy as np
import pytest

from rtcore.envs.preprocess import Preprocessor


def area_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Exact area average via per-axis coverage matrices (float64)."""

    def cover(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        s = n_in / n_out
        for o in range(n_out):
            lo, hi = o * s, (o + 1) * s
            for i in range(int(np.floor(lo)), int(np.ceil(hi))):
                m[o, i] = (min(hi, i + 1) - max(lo, i)) / s
        return m

    return cover(img.shape[0], out_h) @ img.astype(np.float64) @ cover(img.shape[1], out_w).T


@pytest.mark.parametrize("shape", [(210, 160), (144, 160), (250, 160)])
def test_grey_resize_rounds_the_exact_area_average(rng, shape):
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = Preprocessor(shape)(img)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert np.abs(out - area_reference(img, 84, 84)).max() <= 0.52


def test_rgba_frames_become_bt601_luma(rng):
    rgba = rng.integers(0, 256, (144, 160, 4), dtype=np.uint8)
    rgb = np.ascontiguousarray(rgba[..., :3])
    c32 = rgba.astype(np.int32)
    luma = ((77 * c32[..., 0] + 150 * c32[..., 1] + 29 * c32[..., 2] + 128) >> 8).astype(np.uint8)
    a = Preprocessor((144, 160, 4))(rgba)
    b = Preprocessor((144, 160, 3))(rgb)
    c = Preprocessor((144, 160))(luma)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, c)


def test_writes_into_the_given_array_and_accepts_row_strides(rng):
    big = rng.integers(0, 256, (210, 200), dtype=np.uint8)
    view = big[:, :160]  # rows 200 bytes apart
    out = np.zeros((84, 84), np.uint8)
    p = Preprocessor((210, 160))
    assert p(view, out) is out
    np.testing.assert_array_equal(out, p(np.ascontiguousarray(view)))


def test_a_channel_view_is_resized_like_a_copy(rng):
    rgba = rng.integers(0, 256, (144, 160, 4), dtype=np.uint8)
    p = Preprocessor((144, 160))
    np.testing.assert_array_equal(p(rgba[:, :, 0]), p(np.ascontiguousarray(rgba[:, :, 0])))


def test_bad_frames_are_refused_with_the_expected_shape():
    p = Preprocessor((210, 160))
    with pytest.raises(ValueError, match=r"frame has shape \(100, 160\), expected \(210, 160\)"):
        p(np.zeros((100, 160), np.uint8))
    with pytest.raises(ValueError, match="dtype float32, expected uint8"):
        p(np.zeros((210, 160), np.float32))
    with pytest.raises(ValueError, match="contiguous pixels"):
        Preprocessor((210, 160, 3))(np.zeros((210, 160, 6), np.uint8)[:, :, ::2])
    with pytest.raises(ValueError, match="positive, non-overlapping strides"):
        p(np.zeros((210, 160), np.uint8)[:, ::-1])
    with pytest.raises(ValueError, match=r"out has shape \(84, 83\), expected \(84, 84\)"):
        p(np.zeros((210, 160), np.uint8), np.zeros((84, 83), np.uint8))
    with pytest.raises(ValueError, match="only shrinks"):
        Preprocessor((50, 50))
    with pytest.raises(ValueError, match="1, 3 or 4"):
        Preprocessor((210, 160, 2))
