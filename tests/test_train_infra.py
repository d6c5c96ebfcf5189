"""Training infrastructure: config parsing, sampler, schedule, checkpoints, events (fast)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_mrplip.progress import ProgressLog, loss_curve, read_events
from napari_mrplip.train import cli
from napari_mrplip.train.checkpointing import (
    CheckpointError,
    TrainState,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from napari_mrplip.train.config import PretrainConfig, PretrainConfigError
from napari_mrplip.train.distributed import DistInfo
from napari_mrplip.train.optim import make_optimizer
from napari_mrplip.train.precision import make_scaler
from napari_mrplip.train.sampler import StepBatchSampler
from napari_mrplip.train.schedule import make_scheduler, warmup_cosine


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return parser.parse_args(argv)


def test_cli_maps_arguments_onto_config(tmp_path):
    args = _parse(
        ["--config", "mrplip-tiny", "--slides", "a.svs", "skimage:immunohistochemistry",
         "--out", str(tmp_path), "--max-steps", "7", "--batch-size", "4", "--grad-accum", "2",
         "--precision", "bf16", "--magnifications", "5", "10", "--slide-mpp", "0.5",
         "--no-augment", "--lr", "1e-3"]
    )  # fmt: skip
    cfg = cli.config_from_args(args)
    assert cfg.slides == ["a.svs", "skimage:immunohistochemistry"]
    assert (cfg.max_steps, cfg.batch_size, cfg.grad_accum) == (7, 4, 2)
    assert cfg.magnifications == (5.0, 10.0) and cfg.slide_mpp == 0.5
    assert cfg.precision == "bf16" and cfg.augment is False and cfg.lr == 1e-3
    assert cfg.micro_batch(world_size=2) == 1
    with pytest.raises(PretrainConfigError, match="divisible"):
        cfg.micro_batch(world_size=3)


def test_resume_reuses_saved_config_and_overrides_given_options(tmp_path):
    saved = PretrainConfig(slides=["x.svs"], out=tmp_path, max_steps=10, batch_size=6, seed=3)
    saved.save(tmp_path / "pretrain_config.json")
    cfg = cli.config_from_args(_parse(["--out", str(tmp_path), "--resume", "--max-steps", "20"]))
    assert cfg.slides == ["x.svs"] and cfg.batch_size == 6 and cfg.seed == 3
    assert cfg.max_steps == 20 and cfg.resume


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "--max-steps"),
        ({"precision": "fp8"}, "--precision"),
        ({"magnifications": (20.0, 5.0)}, "increasing"),
        ({"slide_mpp": -1.0}, "--slide-mpp"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(PretrainConfigError, match=message):
        PretrainConfig(slides=["a.svs"], **kwargs)


def test_cli_without_slides_is_a_clean_error(tmp_path, capsys):
    assert cli.run(_parse(["--out", str(tmp_path)])) == 2
    assert "--slides is required" in capsys.readouterr().err


def test_config_json_round_trip(tmp_path):
    cfg = PretrainConfig(slides=["a.svs"], out=tmp_path / "o", manifest=tmp_path / "m.jsonl")
    again = PretrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg
    with pytest.raises(PretrainConfigError, match="unknown"):
        PretrainConfig.from_json({**cfg.to_json(), "bogus": 1})


def test_sampler_shards_equal_the_single_process_batch():
    """W processes x micro-batches cover exactly the single-process global batch, in order."""
    one = StepBatchSampler(13, 8, total_steps=5, seed=1)
    for grad_accum, world in [(1, 2), (2, 2), (4, 1), (1, 4)]:
        ranks = [
            StepBatchSampler(13, 8, grad_accum=grad_accum, world_size=world, rank=r,
                             total_steps=5, seed=1)
            for r in range(world)
        ]  # fmt: skip
        for step in range(5):
            merged = []
            for m in range(grad_accum):
                for r in ranks:
                    merged += r.micro_batches(step)[m]
            assert merged == one.global_batch(step)


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    full = list(StepBatchSampler(10, 5, total_steps=6, seed=4))
    flat = [i for batch in full for _, i in batch]
    epochs = [e for batch in full for e, _ in batch]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 2
    for epoch in range(3):
        assert sorted(flat[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert flat[:10] != flat[10:20]  # reshuffled each epoch
    resumed = list(StepBatchSampler(10, 5, start_step=4, total_steps=6, seed=4))
    assert resumed == full[4:]
    assert StepBatchSampler(10, 5, seed=4).state(4)["epoch"] == 2


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 10, 100, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:10]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] == pytest.approx(0.1, abs=1e-3)
    assert warmup_cosine(150, 10, 100, 0.1) == pytest.approx(0.1)


def _small_training_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.1)
    state = TrainState(optimizer, make_scheduler(optimizer, 2, 20, 0.1), make_scaler("fp32", "cpu"))
    return model, state


def _train_steps(model, state, n: int) -> list[float]:
    out = []
    for _ in range(n):
        x = torch.randn(4, 6)
        loss = model(x).pow(2).mean() + 0.01 * random.random() + 0.01 * np.random.rand()
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.optimizer.zero_grad()
        out.append(float(loss.detach()))
    return out


def test_checkpoint_round_trip_restores_training_exactly(tmp_path):
    """Save after 3 steps, keep going; a fresh process-like restore reproduces the same losses."""
    model, state = _small_training_setup()
    _train_steps(model, state, 3)
    info = DistInfo()
    path = save_checkpoint(tmp_path, 3, model, state, {"step": 3}, info)
    assert path.name == "step_0000003" and not list(tmp_path.glob(".tmp-*"))
    expected = _train_steps(model, state, 4)

    model2, state2 = _small_training_setup(seed=99)  # different init, RNG consumed differently
    torch.randn(100)
    payload = load_checkpoint(path, model2, state2, info)
    assert payload["step"] == 3 and payload["data"] == {"step": 3}
    assert state2.scheduler.last_epoch == 3
    assert _train_steps(model2, state2, 4) == expected


def test_checkpoints_are_listed_pruned_and_validated(tmp_path):
    model, state = _small_training_setup()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, state, {}, DistInfo())
    (tmp_path / ".tmp-step_0000004").mkdir()  # an interrupted write is never listed
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"step_000000{i}" for i in (1, 2, 3)]
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    other = torch.nn.Linear(3, 3)
    other_state = TrainState(*_small_training_setup()[1].__dict__.values())
    with pytest.raises(CheckpointError, match="cannot restore"):
        load_checkpoint(tmp_path / "step_0000003", other, other_state, DistInfo())
    (tmp_path / "step_0000003" / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "step_0000003", model, state, DistInfo())


def test_state_file_loads_with_weights_only(tmp_path):
    model, state = _small_training_setup()
    _train_steps(model, state, 2)
    path = save_checkpoint(tmp_path, 2, model, state, {"epoch": 0}, DistInfo())
    for name in ("state.pt", "rng_rank0.pt"):
        torch.load(path / name, weights_only=True)  # raises if anything needs unpickling


def test_progress_log_round_trip(tmp_path: Path):
    log = ProgressLog(tmp_path / "progress.jsonl")
    log.emit("start", total_steps=3)
    for step, value in [(1, 3.0), (2, 2.0), (2, 1.5)]:  # a resumed run re-logs step 2
        log.emit("step", step=step, total_steps=3, losses={"loss": value}, lr=0.1, samples_per_s=1)
    with (tmp_path / "progress.jsonl").open("a") as f:
        f.write('{"event": "step", "st')  # a line being written right now
    events = read_events(tmp_path / "progress.jsonl")
    assert [e["event"] for e in events] == ["start", "step", "step", "step"]
    assert all("time" in e for e in events)
    assert loss_curve(events) == {1: 3.0, 2: 1.5}
    ProgressLog(tmp_path / "other.jsonl", enabled=False).emit("start")
    assert not (tmp_path / "other.jsonl").exists()
    assert ProgressLog(None).emit("start", slides=2)["slides"] == 2  # no file: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.jsonl"]
