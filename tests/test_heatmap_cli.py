"""mrplip heatmap / embed: end to end on the CMU SVS with a tiny real model, and dask."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tifffile

from heatmap_tiny_encoder import TinyClipEncoder
from napari_mrplip.heatmap import cli as heatmap_cli
from napari_mrplip.heatmap.jobs import HeatmapJob, output_paths, run_job

_TINY = {}


def tiny_loader(spec, device):
    """Stands in for get_encoder in library-level tests (module-level: picklable for dask)."""
    if spec not in _TINY:
        _TINY[spec] = TinyClipEncoder(input_size=32, embed_dim=32)
    return _TINY[spec]


def job(slides, out, **kw):
    base = dict(prompts=("dense nuclei", "pink stroma"), background=("background",), mpp=4.0,
                model="tiny")  # fmt: skip
    base.update(kw)
    return HeatmapJob(slides=tuple(str(s) for s in slides), out=str(out), **base)


def test_cmu_svs_heatmap_written_with_physical_size(cmu_svs, tmp_path):
    out = tmp_path / "cmu.ome.tif"
    (summary,) = run_job(job([cmu_svs], out, geojson_threshold=0.4), loader=tiny_loader)
    assert "error" not in summary, summary
    with tifffile.TiffFile(out) as tf:
        arr = tf.series[0].levels[0].asarray()
        ome = tf.ome_metadata
    assert arr.shape[0] == 2 and arr.dtype == np.float32
    vals = arr[~np.isnan(arr)]  # NaN = not scored (glass)
    assert vals.size and (vals >= 0).all() and (vals <= 1).all() and vals.max() > 0
    assert 'Name="dense nuclei"' in ome
    # written extent covers the slide (2220 x 2967 px at 0.499 µm/px) to one written pixel
    phys = float(ome.split('PhysicalSizeX="')[1].split('"')[0])
    assert 0 <= arr.shape[2] * phys - 2220 * 0.499 < phys
    assert 0 <= arr.shape[1] * phys - 2967 * 0.499 < phys
    gj = json.loads((tmp_path / "cmu.geojson").read_text())
    assert gj["type"] == "FeatureCollection"


def test_many_slides_to_directory_and_bad_slide_reported(cmu_svs, tmp_path):
    bad = tmp_path / "not_a_slide.svs"
    bad.write_bytes(b"garbage" * 10)
    res = run_job(job([cmu_svs, bad], tmp_path / "out"), loader=tiny_loader)
    assert "error" not in res[0] and "not_a_slide" in res[1]["error"]
    assert (tmp_path / "out" / "CMU-1-Small-Region.ome.tif").exists()
    with pytest.raises(ValueError, match="directory"):
        output_paths(job([cmu_svs, cmu_svs], tmp_path / "x.ome.tif"))


@pytest.mark.slow
def test_dask_local_cluster(cmu_svs, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        res = run_job(job([cmu_svs], tmp_path / "d", out_suffix=".ome.zarr"), client, tiny_loader)
    assert "error" not in res[0], res
    assert (tmp_path / "d" / "CMU-1-Small-Region.ome.zarr" / "zarr.json").exists()


def parse(argv):
    p = argparse.ArgumentParser()
    heatmap_cli.configure(p)
    return p.parse_args(argv)


def test_cli_rejects_bad_input_clearly(cmu_svs, tmp_path, capsys):
    assert heatmap_cli.run(parse([str(cmu_svs), "--out", str(tmp_path / "a.ome.tif")])) == 2
    assert "no prompts" in capsys.readouterr().err
    args = parse([str(cmu_svs), "--prompt", "tumour", "--out", str(tmp_path / "a.ome.tif")])
    assert heatmap_cli.run(args) == 2
    assert "two prompts" in capsys.readouterr().err
    args = parse([str(cmu_svs), "--prompt", "a", "--prompt", "b", "--model",
                  str(tmp_path / "nope"), "--device", "cpu", "--out", str(tmp_path / "a.ome.tif")])  # fmt: skip
    assert heatmap_cli.run(args) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_cli_no_gpu_message(cmu_svs, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exc:  # refused while parsing: exit 2, one line
        parse([str(cmu_svs), "--prompt", "a", "--prompt", "b", "--device", "cuda",
               "--out", str(tmp_path / "a.ome.tif")])  # fmt: skip
    assert exc.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_mrplip_dir(tmp_path_factory):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    out = tmp_path_factory.mktemp("models") / "mrplip-tiny-random"
    save_model(build_model(load_config("mrplip-tiny")), out)
    return out


@pytest.mark.slow
def test_mrplip_cli_end_to_end_with_fusion_and_embed_cache(cmu_svs, tiny_mrplip_dir, tmp_path):
    """`mrplip embed` fills the disk cache; `mrplip heatmap --cache` then encodes nothing."""
    from napari_mrplip.cli import main

    cache = tmp_path / "cache"
    common = ["--model", str(tiny_mrplip_dir), "--mpp", "4.0", "--device", "cpu"]
    assert main(["embed", str(cmu_svs), "--cache", str(cache), *common]) == 0
    assert any(cache.rglob("zarr.json"))
    out = tmp_path / "cmu.ome.zarr"
    argv = ["heatmap", str(cmu_svs), "--prompt", "dense nuclei", "--prompt", "pink stroma",
            "--background", "background", "--out", str(out), "--cache", str(cache), *common]  # fmt: skip
    assert main(argv) == 0
    import zarr

    root = zarr.open_group(str(out), mode="r")
    arr = np.asarray(root["0"])
    assert arr.shape[0] == 2 and np.nanmax(arr) <= 1.0 and np.nanmax(arr) > 0


def test_embed_then_heatmap_reencodes_nothing(cmu_svs, tmp_path):
    from napari_mrplip.embed.cache import EmbeddingCache
    from napari_mrplip.heatmap.embed_cli import embed_slide
    from napari_mrplip.heatmap.engine import HeatmapEngine
    from napari_mrplip.io import open_slide

    enc = tiny_loader("tiny", "cpu")
    with open_slide(cmu_svs) as slide:
        info = embed_slide(
            HeatmapEngine(enc, EmbeddingCache(disk_dir=tmp_path)), slide, 4.0, 0.0, True
        )
    assert info["encoded"] == info["tiles"] > 0
    calls = enc.image_encode_calls
    (summary,) = run_job(
        job([cmu_svs], tmp_path / "h.ome.tif", cache_dir=str(tmp_path)), loader=tiny_loader
    )
    assert summary["encoded"] == 0 and enc.image_encode_calls == calls


def test_cli_slide_without_mpp(no_mpp_slide, tmp_path, capsys):
    """An explicit --mpp on a slide with no µm/px fails that slide (never a map at another
    scale); without --mpp it is scored at level 0 with one warning line, not a source listing."""
    from napari_mrplip.cli import main

    base = ["heatmap", str(no_mpp_slide), "--prompt", "dense nuclei", "--background",
            "background", "--model", "mrplip-demo", "--device", "cpu"]  # fmt: skip
    out = tmp_path / "a.ome.tif"
    assert main([*base, "--mpp", "1.0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no µm/px" in err and "1.0 µm/px" in err and "--slide-mpp" in err
    assert not out.exists()
    assert main([*base, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "mrplip heatmap: warning:" in err and "pyramid level 0" in err
    assert "UserWarning" not in err and out.exists()
    # stated once, the same command scores at the asked µm/px
    assert main(["info", str(no_mpp_slide), "--slide-mpp", "0.5"]) == 0
    assert main([*base, "--mpp", "1.0", "--out", str(tmp_path / "b.ome.tif")]) == 0
    err = capsys.readouterr().err
    assert "stated earlier" in err and "warning" not in err
    with tifffile.TiffFile(tmp_path / "b.ome.tif") as tf:
        phys = float(tf.ome_metadata.split('PhysicalSizeX="')[1].split('"')[0])
    assert phys > 0.5  # physical size recorded: scored at a magnification
