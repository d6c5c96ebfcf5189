"""HeatmapEngine with a real tiny open_clip model on synthetic and real slides."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest

from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.embed.cache import EmbeddingCache
from napari_mrplip.embed.embedder import SlideEmbedder
from napari_mrplip.heatmap.engine import HeatmapEngine
from napari_mrplip.heatmap.result import HeatmapRequest
from napari_mrplip.io.slide import Slide
from napari_mrplip.models.prompts import PromptError


def tissue_slide(w=1000, h=700, mpp=0.5, seed=0) -> Slide:
    """White glass with a textured purple 'tissue' blob; two levels."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 242, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((xx - w * 0.45) / (w * 0.3)) ** 2 + ((yy - h * 0.5) / (h * 0.3)) ** 2 < 1
    tex = rng.integers(0, 60, (h, w, 1))
    img[blob] = (np.array([170, 80, 160]) + tex[blob] - 30).clip(0, 255).astype(np.uint8)
    l0 = da.from_array(img, chunks=(256, 256, 3))
    l1 = da.from_array(img[::2, ::2], chunks=(256, 256, 3))
    return Slide(path=f"/tmp/synthetic-{w}x{h}-{seed}.tif", levels=[l0, l1], mpp=mpp)


@pytest.fixture(scope="module")
def encoder():
    return TinyClipEncoder(input_size=32, embed_dim=32)


def request(**kw):
    base = {
        "prompts": ("dense nuclei", "pink stroma"),
        "background": ("background",),
        "target_mpp": 1.0,
    }
    base.update(kw)
    return HeatmapRequest(**base)


def test_result_covers_slide_and_probabilities(encoder):
    slide = tissue_slide()
    eng = HeatmapEngine(encoder, batch_size=16)
    res = eng.compute(slide, request(tissue_only=False))
    assert res.complete and res.done == res.total > 0
    # tile = 32 px at 1.0 µm/px on a 0.5 µm/px slide = 64 level-0 px
    assert res.step_level0 == pytest.approx(64.0)
    assert res.scores.shape == (2, int(np.ceil(700 / 64)), int(np.ceil(1000 / 64)))
    assert res.scores.dtype == np.float32
    assert np.isfinite(res.scores).all()
    assert (res.scores >= 0).all() and (res.scores <= 1).all()
    # world extent (µm) equals the slide's within one tile step; translate = half-step
    (sy, sx), (ty, tx) = res.napari_placement()
    assert sx == pytest.approx(0.5 * 64)
    assert tx == pytest.approx(0.5 * (64 - 1) / 2)
    extent_x = res.scores.shape[2] * sx
    assert abs(extent_x - 1000 * 0.5) <= sx


def test_tissue_only_leaves_glass_nan(encoder):
    slide = tissue_slide()
    res = HeatmapEngine(encoder).compute(slide, request())
    assert 0 < res.total < res.scores[0].size
    assert np.isnan(res.scores[:, 0, 0]).all()  # corner is glass
    r, c = res.scores.shape[1] // 2, int(res.scores.shape[2] * 0.45)
    assert np.isfinite(res.scores[:, r, c]).all()


def test_progressive_results_count_up_and_end_complete(encoder):
    slide = tissue_slide()
    eng = HeatmapEngine(encoder, batch_size=8)
    results = list(eng.run(slide, request(tissue_only=False)))
    dones = [r.done for r in results]
    assert len(results) > 3
    assert dones == sorted(dones) and dones[0] < dones[-1]
    assert results[-1].complete and not results[0].complete
    assert np.isnan(results[0].scores).sum() > np.isnan(results[-1].scores).sum()


def test_reprompt_over_cached_tiles_encodes_no_image(encoder):
    slide = tissue_slide(seed=1)
    eng = HeatmapEngine(encoder, cache=EmbeddingCache())
    eng.compute(slide, request())
    calls = encoder.image_encode_calls
    res = eng.compute(slide, request(prompts=("tumour", "lymphocytes|immune cells")))
    assert encoder.image_encode_calls == calls
    assert res.complete and np.isfinite(res.scores).any()
    # and a new engine sharing the cache does not re-encode either
    eng2 = HeatmapEngine(encoder, cache=eng.cache)
    list(eng2.run(slide, request(prompts=("fat", "mucin"))))
    assert encoder.image_encode_calls == calls


def test_panning_encodes_only_new_tiles(encoder):
    slide = tissue_slide(w=1600, h=800, seed=2)
    eng = HeatmapEngine(encoder, batch_size=32)
    req = request(tissue_only=False, region_level0=(0, 0, 640, 640))
    eng.compute(slide, req)
    first = encoder.tiles_seen
    before = encoder.tiles_seen
    # shift right by 4 tiles (256 level-0 px): 4 new columns of 10 rows
    eng.compute(slide, request(tissue_only=False, region_level0=(256, 0, 896, 640)))
    assert encoder.tiles_seen - before == 4 * 10
    assert first > 0


def test_cancel_stops_early(encoder):
    slide = tissue_slide(w=2000, h=1400, seed=3)
    eng = HeatmapEngine(encoder, batch_size=4)
    cancel = threading.Event()
    seen = []
    for res in eng.run(slide, request(tissue_only=False), cancel=cancel):
        seen.append(res.done)
        if len(seen) == 2:
            cancel.set()
    assert len(seen) == 2
    assert seen[-1] < res.total
    assert eng.tiles_encoded <= 4 * 2


def test_overlap_grid_and_fusion_run(encoder):
    slide = tissue_slide(w=800, h=600, seed=4)
    eng = HeatmapEngine(encoder, batch_size=64)
    res = eng.compute(
        slide, request(tissue_only=False, overlap=0.5, fusion=(0.25, 0.5, 0.25), target_mpp=1.0)
    )
    assert res.step_level0 == pytest.approx(32.0) and res.tile_level0 == pytest.approx(64.0)
    assert set(res.meta["passes"]) == {"self", "parent", "children"}
    assert res.complete and np.isfinite(res.scores).all()


def test_mrplip_encoder_fuses_by_default():
    enc = TinyClipEncoder(input_size=32, embed_dim=32, is_mrplip=True)
    eng = HeatmapEngine(enc)
    assert eng.fusion_weights(request()) == (0.25, 0.5, 0.25)
    assert eng.fusion_weights(request(fusion=(0.0, 1.0, 0.0))) is None


def test_bad_prompts(encoder):
    eng = HeatmapEngine(encoder)
    slide = tissue_slide()
    with pytest.raises(PromptError, match="no prompts"):
        list(eng.run(slide, request(prompts=())))
    with pytest.raises(PromptError, match="no text"):
        list(eng.run(slide, request(prompts=("tumour", " | "))))
    with pytest.raises(PromptError, match="at least two"):
        list(eng.run(slide, request(prompts=("tumour",), background=())))
    res = eng.compute(slide, request(prompts=("tumour",), background=(), mode="cosine"))
    assert np.nanmax(res.scores) <= 1.0


def test_long_prompt_warns(encoder):
    eng = HeatmapEngine(encoder)
    long = " ".join(["carcinoma"] * 90)
    with pytest.warns(UserWarning, match="truncated"):
        eng.compute(tissue_slide(), request(prompts=(long, "stroma")))


def test_embed_boxes_cached_and_shared_with_the_engine(encoder):
    slide = tissue_slide(seed=5)
    eng = HeatmapEngine(encoder)
    boxes = [(0, 0, 64, 64), (300, 200, 364, 264), (100, 100, 228, 228)]
    seen = []
    a = eng.embedder.embed_boxes(slide, boxes, progress=seen.append)
    assert sum(seen) == 3
    calls = encoder.image_encode_calls
    again = SlideEmbedder(encoder, cache=eng.cache)  # another consumer on the same cache
    b = again.embed_boxes(slide, boxes)
    assert a.shape == (3, 32) and np.allclose(a, b)
    assert encoder.image_encode_calls == calls and again.tiles_encoded == 0
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    c = eng.embedder.embed_boxes(slide, [(10, 10, 30, 40)])  # upsampled, not square
    assert c.shape == (1, 32)


def test_similarity_cache_gives_same_scores_as_fresh(encoder):
    slide = tissue_slide(seed=8)
    eng = HeatmapEngine(encoder)
    eng.compute(slide, request(prompts=("dense nuclei", "pink stroma")))
    mixed = eng.compute(slide, request(prompts=("pink stroma", "fat", "dense nuclei")))
    fresh = HeatmapEngine(encoder, cache=eng.cache).compute(
        slide, request(prompts=("pink stroma", "fat", "dense nuclei"))
    )
    np.testing.assert_allclose(mixed.scores, fresh.scores, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_first_batch_is_small_for_a_quick_first_partial(encoder):
    slide = tissue_slide(seed=9)
    eng = HeatmapEngine(encoder, batch_size=64)
    first = next(iter(eng.run(slide, request(tissue_only=False))))
    assert first.done == 8 and first.total > 64


def test_fast_thumbnail_matches_slide_thumbnail(cmu_svs):
    from napari_mrplip.embed.reader import fast_thumbnail
    from napari_mrplip.io import open_slide

    with open_slide(cmu_svs) as slide:
        fast = fast_thumbnail(slide, 300)
        ref = slide.thumbnail(300)
    assert max(fast.shape[:2]) <= 300 and fast.dtype == np.uint8
    h, w = min(fast.shape[0], ref.shape[0]), min(fast.shape[1], ref.shape[1])
    diff = np.abs(fast[:h, :w].astype(int) - ref[:h, :w].astype(int)).mean()
    assert diff < 20  # same picture (block mean vs anti-aliased resize)


class _FlakyReader:
    """A RegionReader whose pixels in the right third fail to decode (like corrupt JPEG tiles):
    any read that touches them fails, as with a real file."""

    def __init__(self, img):
        self.img = img

    def read(self, level, x, y, w, h):
        from napari_mrplip.io.errors import TileReadError

        src = self.img if level == 0 else self.img[::2, ::2]
        if (x + w) * (1 + level) > 640:  # level 1 is 2x downsampled
            raise TileReadError(f"/tmp/flaky.svs: level 0 tile at x={x}, y={y} is corrupt")
        return src[y : y + h, x : x + w]


def test_tile_decode_failures_are_nan_counted_and_reported(encoder, caplog):
    slide = tissue_slide(w=960, h=320, seed=10)
    slide.reader = _FlakyReader(np.asarray(slide.levels[0]))
    res = HeatmapEngine(encoder).compute(slide, request(tissue_only=False))
    assert res.complete
    assert res.meta["failed_tiles"] == 5 * 5  # cols 10..14 (x >= 640) x 5 rows
    assert np.isnan(res.scores[:, :, 10:]).all() and np.isfinite(res.scores[:, :, :10]).all()
    assert "failed to decode" in caplog.text


def test_new_prompt_computes_one_similarity_column(encoder):
    slide = tissue_slide(seed=11)
    eng = HeatmapEngine(encoder)
    eng.compute(slide, request())  # tissue only: glass tiles are never embedded
    columns = []
    real = eng.cache.map_filled

    def counting(key, r0, r1, c0, c1, fn, n_out):
        columns.append(n_out)
        return real(key, r0, r1, c0, c1, fn, n_out)

    eng.cache.map_filled = counting
    eng.compute(slide, request(prompts=("dense nuclei", "pink stroma", "mucin")))
    assert columns == [1]
    eng.compute(slide, request(prompts=("mucin", "dense nuclei")))
    assert columns == [1]  # everything known: no similarity recomputed


def test_slide_without_mpp_scores_at_a_level(encoder):
    from napari_mrplip.io.errors import MissingMppError

    slide = tissue_slide(mpp=None, seed=12)
    res = HeatmapEngine(encoder).compute(slide, request(target_mpp=None, level=1))
    assert res.mpp is None and res.step_level0 == 64 and res.complete
    (s, _), (t, _) = res.napari_placement()
    assert s == 64 and t == pytest.approx(31.5)  # level-0 px when there is no µm/px
    with pytest.raises(MissingMppError, match="slide-mpp"):
        list(HeatmapEngine(encoder).run(slide, request(target_mpp=0.5)))
