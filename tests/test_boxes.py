import numpy as np
import pytest

from siimcovid import boxes as B


def test_xywh_xyxy_round_trip():
    a = np.array([[10, 20, 30, 40], [0, 0, 1, 1]], float)
    assert np.allclose(B.xyxy_to_xywh(B.xywh_to_xyxy(a)), a)
    assert B.xywh_to_xyxy(a)[0].tolist() == [10, 20, 40, 60]
    assert B.as_array([]).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.as_array([[1, 2, 3]])


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_resize_round_trip(keep_aspect):
    r = B.Resize.plan(2544, 3028, 512, keep_aspect=keep_aspect)
    orig = np.array([[100.5, 200.25, 1800.0, 2400.0], [0, 0, 3028, 2544]])
    back = r.to_original(r.to_resized(orig))
    assert np.allclose(back, orig)
    res = r.to_resized(orig)
    assert res[:, [0, 2]].max() <= 512 + 1e-9 and res[:, [1, 3]].max() <= 512 + 1e-9
    if keep_aspect:
        assert r.scale_x == r.scale_y == pytest.approx(512 / 3028)
        assert r.content_hw == (round(2544 * 512 / 3028), 512)
    else:
        assert res[1].tolist() == pytest.approx([0, 0, 512, 512])


def test_to_original_clips_to_image():
    r = B.Resize.plan(100, 200, 50)
    out = r.to_original([[-5, -5, 60, 60]])
    assert out[0].tolist() == [0, 0, 200, 100]


def test_iou_matrix_hand_values():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 20, 10]]
    assert np.allclose(B.iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.5]])
    assert B.iou_matrix([], b).shape == (0, 4)


def test_paint_mask_covers_boxes_only():
    m = B.paint_mask([[2, 3, 5.5, 6]], height=8, width=8)
    assert m.dtype == np.uint8 and m.sum() == (6 - 3) * (6 - 2)
    assert m[3:6, 2:6].all() and not m[:3].any()
    assert B.paint_mask([], 4, 4).sum() == 0
