"""Dense (patch-token) maps: same encoder pass as the tile map, placement, cache, CLI; and
the dense token alignment loss that trains them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mrplip.heatmap.dense import DenseUnavailableError, TokenCache, compute_dense, run_dense
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.result import HeatmapRequest
from napari_mrplip.io import open_slide
from napari_mrplip.models.losses import dense_alignment_loss

PROMPTS = ("brown DAB-positive nuclei", "hematoxylin counterstain")


@pytest.fixture(scope="module")
def demo():
    from napari_mrplip.models.encoders import get_encoder

    return get_encoder("mrplip-demo", device="cpu")


def _req(**kw):
    base = dict(prompts=PROMPTS, background=("background",), target_mpp=0.5,
                region_level0=(0, 0, 700, 500), tissue_only=False)  # fmt: skip
    return HeatmapRequest(**{**base, **kw})


def test_dense_and_tile_maps_come_from_one_pass(demo, os2_ome):
    engine = HeatmapEngine(demo, batch_size=64)
    with open_slide(os2_ome) as slide:
        calls = demo.image_encode_calls
        dense, tile = compute_dense(engine, slide, _req())
        dense_calls = demo.image_encode_calls - calls
        calls = demo.image_encode_calls
        ref = engine.compute(slide, _req(fusion=(0.0, 1.0, 0.0)))  # tile map, plain engine
        # both maps from the passes a tile-only run makes: no extra image encoding
        assert dense_calls == demo.image_encode_calls - calls == 2  # first batch of 8, then 1
    g = demo.dense_grid
    assert g == 7 and dense.meta["dense"] == 7
    assert dense.scores.shape == (2, tile.scores.shape[1] * g, tile.scores.shape[2] * g)
    assert dense.step_level0 == pytest.approx(tile.step_level0 / g)
    assert dense.origin_level0 == tile.origin_level0
    np.testing.assert_allclose(tile.scores, ref.scores, atol=1e-5)
    vals = dense.scores[~np.isnan(dense.scores)]
    assert vals.size and vals.min() >= 0 and vals.max() <= 1
    assert dense.scores[0].std() > 0  # varies within tiles, not flat blocks
    blocks = dense.scores[0].reshape(tile.scores.shape[1], g, tile.scores.shape[2], g)
    assert np.nanstd(blocks, axis=(1, 3)).mean() > 0


def test_token_cache_reuses_tiles_and_tissue_only_leaves_glass_nan(demo, os2_ome):
    engine = HeatmapEngine(demo, batch_size=64)
    cache = TokenCache()
    with open_slide(os2_ome) as slide:
        compute_dense(engine, slide, _req(), cache)
        calls = demo.image_encode_calls
        again = list(run_dense(engine, slide, _req(), cache))
        assert demo.image_encode_calls == calls and len(again) == 1  # all from the cache
        dense, tile = compute_dense(engine, slide, _req(tissue_only=True, region_level0=None))
    glass = np.isnan(tile.scores[0])
    assert glass.any() and (~glass).any()
    g = dense.meta["dense"]
    np.testing.assert_array_equal(np.isnan(dense.scores[0][::g, ::g]), glass)


def test_external_models_have_no_dense_maps(os2_ome):
    from heatmap_tiny_encoder import TinyClipEncoder

    engine = HeatmapEngine(TinyClipEncoder())
    with open_slide(os2_ome) as slide, pytest.raises(DenseUnavailableError, match="MR-PLIP"):
        compute_dense(engine, slide, _req())


def test_cli_dense_writes_a_finer_raster(os2_ome, tmp_path):
    from napari_mrplip.cli import main
    from napari_mrplip.heatmap.export import read_heatmap_metadata

    out = tmp_path / "d.ome.tif"
    rc = main(["heatmap", str(os2_ome), "--dense", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
               "--background", "background", "--mpp", "1.0", "--out", str(out),
               "--device", "cpu"])  # fmt: skip
    assert rc == 0
    meta = read_heatmap_metadata(out)
    assert meta["dense"] == 7 and meta["step_level0"] == pytest.approx(meta["tile_level0"] / 7)


def test_dense_alignment_loss_prefers_aligned_tokens_and_trains():
    torch.manual_seed(0)
    kw = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    present = torch.tensor([[True, False, False], [False, True, True]])
    aligned = torch.nn.functional.normalize(torch.randn(2, 9, 16) * 0.1, dim=-1)
    aligned = aligned.clone()
    aligned[0, :4] = kw[0]  # tile 0 shows keyword 0 in four tokens
    aligned[1, :4], aligned[1, 4:8] = kw[1], kw[2]
    scale = torch.tensor(10.0)
    random = torch.nn.functional.normalize(torch.randn(2, 9, 16), dim=-1)
    assert dense_alignment_loss(aligned, kw, present, 4, scale) < dense_alignment_loss(
        random, kw, present, 4, scale
    )
    tok = random.clone().requires_grad_(True)
    dense_alignment_loss(tok, kw, present, 4, scale).backward()
    assert tok.grad.abs().sum() > 0
    nothing = torch.zeros_like(present)
    assert dense_alignment_loss(random, kw, nothing, 4, scale) == 0
