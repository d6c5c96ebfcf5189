"""Acceptance for issue 10, models and training: configs, model folders, resume (defects 7, 8,
10), from generated files only, each command under a timeout and a memory limit."""

from __future__ import annotations

import json

import pytest

from hardening_util import (
    MAX_RSS_BYTES,
    boxes_geojson,
    code_pickle,
    digests,
    run_cli,
    write_json,
    write_slide,
)

TINY = {
    "name": "mrplip-hardening", "embed_dim": 64, "image_size": 32, "context_length": 48,
    "keyword_context_length": 8,
    "vision": {"kind": "vit", "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text": {"layers": 1, "width": 64, "heads": 2}, "fusion": {"layers": 1, "width": 64, "heads": 2},
    "mrtva": {"proj_dim": 64, "pred_dim": 32},
}  # fmt: skip
PROMPTS = ["--prompt", "tumour", "--background", "background"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import MRPLIPConfig
    from napari_mrplip.models.mrplip import MRPLIP

    d = tmp_path_factory.mktemp("hardening_models")
    write_slide(d / "a.ome.tif", 1)
    write_json(d / "a.geojson", boxes_geojson())
    save_model(MRPLIP(MRPLIPConfig.from_dict(TINY)), d / "tiny")
    return d


def _refused(run, *needles: str) -> None:
    assert run.rc == 2 and run.clean_error, (run.rc, run.stderr[-2000:])
    for n in needles:
        assert n in run.stderr, run.stderr[-2000:]
    assert run.max_rss_bytes < MAX_RSS_BYTES, run.max_rss_bytes


def _model_dir(work, tmp_path, edit) -> str:
    import shutil

    d = tmp_path / "model"
    shutil.copytree(work / "tiny", d)
    cfg = json.loads((d / "mrplip_config.json").read_text())
    edit(cfg)
    (d / "mrplip_config.json").write_text(json.dumps(cfg))
    return str(d)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["vision"].update(layers=40, width=2048), "does not match"),  # 7
        (lambda c: c["vision"].update(width=10**9), "vision.width"),  # 7: terabytes
        (lambda c: c["vision"].update(patch_size=0), "patch_size"),  # 8
        (lambda c: c.update(embed_dim="wide"), "embed_dim"),  # 8: wrong type
        (lambda c: c.update(image_mean="grey"), "invalid MR-PLIP config"),
    ],
    ids=["7-big-tower", "7-width-1e9", "8-patch-0", "8-type", "8-mean-type"],
)
def test_model_config_checked_before_building(work, tmp_path, edit, needle):
    model = _model_dir(work, tmp_path, edit)
    before = digests(work)
    run = run_cli(["heatmap", "a.ome.tif", *PROMPTS, "--model", model, "--out",
                   str(tmp_path / "x.ome.tif")], work, timeout=120)  # fmt: skip
    _refused(run, needle)
    assert digests(work) == before and run.seconds < 120


def test_plip_folder_with_code_pickle_is_refused_and_never_run(work, tmp_path):
    """8: a PLIP folder whose weights are a pickle with code: a message, the code never runs."""
    plip, marker = tmp_path / "plip", tmp_path / "PWNED"
    plip.mkdir()
    write_json(plip / "config.json", {"model_type": "clip", "architectures": ["CLIPModel"]})
    (plip / "pytorch_model.bin").write_bytes(code_pickle(marker))
    run = run_cli(["review", "a.geojson", "--slide", "a.ome.tif", "--model", str(plip)], work)
    _refused(run, "cannot load")
    assert not marker.exists()


def test_conch_folder_with_bad_tokenizer_is_a_message(work, tmp_path):
    conch = tmp_path / "conch"
    conch.mkdir()
    (conch / "conch_byte_level_bpe_uncased.json").write_text('{"model": {"type": "BPE", "vo')
    (conch / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    (conch / "meta.yaml").write_text("model: conch\n")
    run = run_cli(["heatmap", "a.ome.tif", *PROMPTS, "--model", str(conch), "--out",
                   str(tmp_path / "x.ome.tif")], work)  # fmt: skip
    _refused(run, "conch")


def _pretrain(work, out, *extra):
    args = ["pretrain", "--config", str(work / "tiny.json"), "--slides", str(work / "a.ome.tif"),
            "--out", str(out), "--magnifications", "10", "20", "--tile-px", "32",
            "--children-per-parent", "1", "--parents-per-slide", "4", "--batch-size", "2",
            "--device", "cpu", "--threads", "1", "--no-progress-bar", "--no-register",
            "--warmup-steps", "1", *extra]  # fmt: skip
    return run_cli(args, work, timeout=300)


def test_truncated_pretrain_config_is_a_message(work, tmp_path):
    """8: a truncated OUT/pretrain_config.json on --resume: exit 2, the file untouched."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_0000001").mkdir(parents=True)
    (run_dir / "pretrain_config.json").write_text('{"slides": ["a.ome.tif"], "max_st')
    before = digests(run_dir)
    _refused(run_cli(["pretrain", "--out", str(run_dir), "--resume"], work), "truncated")
    assert digests(run_dir) == before


@pytest.mark.slow
def test_resume_refuses_other_config_untouched_and_falls_back_past_a_corrupt_checkpoint(
    work, tmp_path
):
    """10 and 8: --resume --config OTHER changes nothing; a corrupt newest checkpoint is
    skipped for the newest intact one, saying so."""
    write_json(work / "tiny.json", TINY)
    write_json(work / "other.json", {**TINY, "embed_dim": 32})
    run_dir = tmp_path / "run"
    first = _pretrain(work, run_dir, "--max-steps", "4", "--checkpoint-every", "2")
    assert first.rc == 0, first.stderr[-3000:]
    before = {k: v for k, v in digests(run_dir).items() if k != "progress.jsonl"}
    other = run_cli(["pretrain", "--out", str(run_dir), "--resume", "--config",
                     str(work / "other.json")], work, timeout=300)  # fmt: skip
    _refused(other, "does not match")
    after = digests(run_dir)  # progress.jsonl gains the 'error' event, nothing else changes
    assert {k: v for k, v in after.items() if k != "progress.jsonl"} == before
    newest = run_dir / "checkpoints" / "step_0000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    again = run_cli(["pretrain", "--out", str(run_dir), "--resume", "--max-steps", "5"], work,
                    timeout=300)  # fmt: skip
    assert again.rc == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert "falling back to step_0000002" in again.stderr


def test_pretrain_out_that_is_a_file_is_a_message(work):
    """11: ``--out`` naming an existing file (here the annotations) is refused, untouched."""
    before = digests(work)
    run = run_cli(["pretrain", "--slides", "a.ome.tif", "--out", "a.geojson"], work)
    _refused(run, "is a file")
    assert digests(work) == before
