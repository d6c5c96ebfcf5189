"""Refine as you zoom: finer results fused into the coarse map, which stays outside them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip.heatmap.refine import ResolutionMap, ratio, refine


def coarse_map():
    scores = np.full((1, 4, 4), 0.2, np.float32)
    scores[0, 1, 1] = 0.8
    at = np.full((4, 4), 4.0, np.float32)
    return ResolutionMap(scores, at, 80.0, (0.0, 0.0))


def test_finer_result_fuses_with_its_parent_and_keeps_the_rest():
    fine = np.full((1, 4, 4), 1.0, np.float32)  # the view: level-0 [80, 160) at step 20
    res = refine(coarse_map(), fine, (80.0, 80.0), 20.0, computed_at=0.5)
    assert res.step_level0 == 20.0 and res.scores.shape == (1, 16, 16)
    inside = res.scores[0, 4:8, 4:8]
    np.testing.assert_allclose(inside, (0.25 * 0.8 + 0.5 * 1.0) / 0.75)  # parent/child fusion
    outside = res.scores[0].copy()
    outside[4:8, 4:8] = np.nan
    assert np.nanmax(np.abs(outside - np.kron(coarse_map().scores[0], np.ones((4, 4))))) == 0
    assert res.summary() == {0.5: 16, 4.0: 240}
    # a later progressive update of the same refinement fuses with the same parent
    res = refine(res, fine * 0.5, (80.0, 80.0), 20.0, computed_at=0.5)
    np.testing.assert_allclose(res.scores[0, 4:8, 4:8], (0.25 * 0.8 + 0.5 * 0.5) / 0.75)


def test_coarser_result_only_fills_holes():
    res = refine(coarse_map(), np.ones((1, 4, 4), np.float32), (80.0, 80.0), 20.0, 0.5)
    holes = ResolutionMap(res.scores.copy(), res.computed_at.copy(), 20.0, (0.0, 0.0))
    holes.scores[:, 0, 0] = np.nan
    holes.computed_at[0, 0] = np.nan
    out = refine(holes, np.full((1, 4, 4), 0.9, np.float32), (0.0, 0.0), 80.0, 4.0)
    assert out.scores[0, 0, 0] == pytest.approx(0.9)  # filled
    np.testing.assert_array_equal(out.scores[0, 4:8, 4:8], res.scores[0, 4:8, 4:8])  # kept


def test_lattices_must_nest():
    assert ratio(80.0, 20.0) == 4 and ratio(80.0, 30.0) is None
    with pytest.raises(ValueError, match="nest"):
        refine(coarse_map(), np.ones((1, 2, 2), np.float32), (0.0, 0.0), 30.0, 1.0)
