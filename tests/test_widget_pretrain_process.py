"""Training subprocess plumbing: JSON-lines tailing, stop signal, stderr of a dead process."""

from __future__ import annotations

import json
import sys
import textwrap
import time

from napari_mrplip._napari.process import JsonlTail, TrainingProcess, pretrain_command


def test_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "progress.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # file not there yet
    with path.open("w") as f:
        f.write(json.dumps({"event": "start", "total_steps": 3}) + "\n")
        f.write('{"event": "st')  # half-written line
    assert [e["event"] for e in tail.read()] == ["start"]
    with path.open("a") as f:
        f.write('ep", "step": 1}\n')
        f.write("not json\n")
    assert tail.read() == [{"event": "step", "step": 1}]
    assert tail.read() == []


def test_pretrain_command_uses_torchrun_for_several_gpus():
    one = pretrain_command(["--max-steps", "5"], gpus=1)
    assert one[:3] == [sys.executable, "-m", "napari_mrplip.train"]
    many = pretrain_command(["--max-steps", "5"], gpus=4)
    assert "torch.distributed.run" in many and "--nproc_per_node=4" in many
    assert many[-3:] == ["napari_mrplip.train", "--max-steps", "5"]


_FAKE_TRAINER = textwrap.dedent(
    """
    import json, signal, sys, time
    out = sys.argv[1]
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    def emit(**kw):
        with open(out + "/progress.jsonl", "a") as f:
            f.write(json.dumps(kw) + "\\n")
    emit(event="start", total_steps=1000)
    for i in range(1, 1000):
        if stop:
            emit(event="stopped", step=i, checkpoint=out + "/ckpt")
            sys.exit(0)
        emit(event="step", step=i, total_steps=1000, losses={"loss": 1.0 / i})
        time.sleep(0.02)
    """
)


def _wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_process_streams_events_and_stops_cleanly_on_sigint(tmp_path):
    """A real child process: events are tailed while it runs; SIGINT makes it checkpoint."""
    script = tmp_path / "trainer.py"
    script.write_text(_FAKE_TRAINER)
    proc = TrainingProcess([sys.executable, str(script), str(tmp_path)], tmp_path).start()
    assert _wait_for(lambda: any(e.get("step", 0) >= 3 for e in proc.poll() or proc.events))
    proc.stop()
    assert proc.wait(timeout=20) == 0
    proc.poll()
    assert proc.events[0]["event"] == "start"
    assert proc.events[-1]["event"] == "stopped"
    assert not proc.running


def test_dead_process_shows_stderr_tail(tmp_path):
    code = (
        "import sys; print('loading...', file=sys.stderr); raise SystemExit('CUDA out of memory')"
    )
    proc = TrainingProcess([sys.executable, "-c", code], tmp_path).start()
    assert proc.wait(timeout=20) == 1
    tail = proc.stderr_tail()
    assert "CUDA out of memory" in tail and "loading..." in tail


def test_resumed_run_skips_old_events(tmp_path):
    (tmp_path / "progress.jsonl").write_text(json.dumps({"event": "done"}) + "\n")
    code = "import json; open(r'%s', 'a').write(json.dumps({'event': 'start'}) + '\\n')" % (
        tmp_path / "progress.jsonl"
    )
    proc = TrainingProcess([sys.executable, "-c", code], tmp_path).start()
    proc.wait(timeout=20)
    assert [e["event"] for e in proc.poll()] == ["start"]
