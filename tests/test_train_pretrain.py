"""End-to-end pretraining on real slides with a test-sized MR-PLIP (real steps, real data).

The model is a 1-layer MR-PLIP at 32 px built from a config written here; the bags come
from the shared CMU slide and scikit-image's IHC image, captioned by the StainCaptioner.
A session-wide manifest is shared by every run (captioning happens once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_mrplip.progress import loss_curve, read_events
from napari_mrplip.train import cli

TEST_MODEL = {
    "name": "mrplip-test",
    "embed_dim": 64,
    "image_size": 32,
    "context_length": 48,
    "keyword_context_length": 8,
    "vision": {"kind": "vit", "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text": {"layers": 1, "width": 64, "heads": 2},
    "fusion": {"layers": 1, "width": 64, "heads": 2},
    "mrtva": {"proj_dim": 64, "pred_dim": 32},
}
DETERMINISTIC_LOSSES = {"itc": 1.0, "cvta": 1.0, "mrtva": 1.0, "itm": 0.0, "mlm": 0.0}


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory, cmu_svs_session):
    """Model config JSONs and a bag manifest shared by every run of this module."""
    root = tmp_path_factory.mktemp("pretrain_inputs")
    full = root / "mrplip-test.json"
    full.write_text(json.dumps(TEST_MODEL))
    det = root / "mrplip-test-det.json"
    det.write_text(json.dumps({**TEST_MODEL, "loss_weights": DETERMINISTIC_LOSSES}))
    return {"config": full, "config_det": det, "manifest": root / "manifest.jsonl",
            "slides": [str(cmu_svs_session), "skimage:immunohistochemistry"]}  # fmt: skip


@pytest.fixture(scope="session")
def cmu_svs_session():
    from conftest import CMU_SVS, _need

    return _need(CMU_SVS)


def _argv(inputs: dict, out: Path, *extra: str, config: str = "config") -> list[str]:
    return [
        "--config", str(inputs[config]), "--slides", *inputs["slides"], "--out", str(out),
        "--manifest", str(inputs["manifest"]), "--magnifications", "10", "20",
        "--tile-px", "64", "--children-per-parent", "1", "--parents-per-slide", "6",
        "--batch-size", "4", "--device", "cpu", "--threads", "1", "--no-progress-bar",
        "--no-register", "--warmup-steps", "2", *extra,
    ]  # fmt: skip


def _env(tmp_path: Path, threads: str = "1") -> dict:
    return dict(os.environ, MRPLIP_HOME=str(tmp_path / "home"), OMP_NUM_THREADS=threads)


def _steps(out: Path) -> list[dict]:
    return [e for e in read_events(out / "progress.jsonl") if e["event"] == "step"]


@pytest.mark.slow
def test_pretrain_logs_every_loss_and_the_loss_falls(train_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    argv = _argv(train_inputs, out, "--max-steps", "24", "--lr", "2e-3", "--checkpoint-every", "10")
    assert cli.main(argv) == 0
    events = read_events(out / "progress.jsonl")
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 25))
    expected = {"itc_loss", "cvta_loss", "mrtva_loss", "itm_loss", "mlm_loss", "loss"}
    for e in steps:
        assert set(e["losses"]) == expected and e["lr"] > 0 and e["samples_per_s"] > 0
    total = [e["losses"]["loss"] for e in steps]
    assert np.mean(total[-4:]) < np.mean(total[:4]) - 0.5, total
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [10, 20, 24]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_0000020", "step_0000024"]  # older ones pruned (keep 2)

    from napari_mrplip.models.checkpoint import load_model

    model = load_model(out / "final")
    assert model.config.name == "mrplip-test"
    from napari_mrplip.models.vocabulary import vocabulary_for_spec

    vocab = vocabulary_for_spec(str(out / "final"))  # recorded from the run's manifest
    assert vocab is not None and vocab.phrases and "nuclei" in vocab.words


@pytest.mark.slow
def test_sigterm_then_resume_continues_the_same_loss_curve(train_inputs, tmp_path):
    steps = "10"
    ref = tmp_path / "ref"  # the uninterrupted run (in this process)
    assert cli.main(_argv(train_inputs, ref, "--max-steps", steps, "--checkpoint-every", "0")) == 0
    reference = loss_curve(read_events(ref / "progress.jsonl"))

    out = tmp_path / "run"
    argv = _argv(train_inputs, out, "--max-steps", steps, "--checkpoint-every", "0")
    proc = subprocess.Popen([sys.executable, "-m", "napari_mrplip.train", *argv],
                            env=_env(tmp_path), stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(_steps(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    events = read_events(out / "progress.jsonl")
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and stopped[0]["step"] < int(steps), "the run finished before SIGTERM"
    stop_step = stopped[0]["step"]
    assert Path(stopped[0]["checkpoint"]).name == f"step_{stop_step:07d}"

    resume = [sys.executable, "-m", "napari_mrplip.train", "--out", str(out), "--resume",
              "--no-progress-bar"]  # fmt: skip
    subprocess.run(resume, env=_env(tmp_path), check=True, capture_output=True)
    events = read_events(out / "progress.jsonl")
    starts = [e for e in events if e["event"] == "start"]
    assert [s["start_step"] for s in starts] == [0, stop_step]
    resumed = loss_curve(events)
    assert sorted(resumed) == list(range(1, int(steps) + 1))
    assert events[-1]["event"] == "done" and events[-1]["step"] == int(steps)
    for step in range(stop_step + 1, int(steps) + 1):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(train_inputs, tmp_path):
    """Same global batch of 4 bags: torchrun x2 (2 bags each) vs one process (4 bags)."""
    common = ("--max-steps", "3", "--checkpoint-every", "0", "--lr", "1e-3")
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(_argv(train_inputs, one, *common, config="config_det")) == 0
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "napari_mrplip.train",
    ]
    run = subprocess.run([*torchrun, *_argv(train_inputs, two, *common, config="config_det")],
                         env=_env(tmp_path), capture_output=True)  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    start = read_events(two / "progress.jsonl")[0]
    assert start["world_size"] == 2
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert set(x["losses"]) == {"itc_loss", "cvta_loss", "mrtva_loss", "loss"}
        for name, value in x["losses"].items():
            assert y["losses"][name] == pytest.approx(value, rel=2e-4, abs=2e-5), (x, y)


def test_missing_slide_is_a_clean_error(train_inputs, tmp_path, capsys):
    missing = tmp_path / "nope.svs"
    argv = _argv(train_inputs, tmp_path / "run", "--max-steps", "1")
    argv[argv.index("--slides") + 1] = str(missing)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such slide file" in err


def test_slide_without_mpp_asks_for_slide_mpp(train_inputs, tmp_path, capsys):
    from skimage import data

    from napari_mrplip.io.writers import write_pyramid

    slide = write_pyramid(tmp_path / "no_mpp.ome.tif", data.immunohistochemistry(), mpp=None)
    argv = _argv(train_inputs, tmp_path / "run", "--max-steps", "1")
    argv[argv.index("--slides") + 1 : argv.index("--out")] = [str(slide)]
    argv[argv.index("--manifest") + 1] = str(tmp_path / "m.jsonl")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no_mpp.ome.tif" in err and "mpp" in err.lower()
    events = read_events(tmp_path / "run" / "progress.jsonl")
    assert events[-1]["event"] == "error"


def test_resume_without_checkpoint_is_a_clean_error(train_inputs, tmp_path, capsys):
    argv = _argv(train_inputs, tmp_path / "run", "--max-steps", "1", "--resume")
    assert cli.main(argv) == 2
    assert "no checkpoint" in capsys.readouterr().err
