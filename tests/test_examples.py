"""The examples, run the way their docstrings say (small settings, so that they take seconds)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("mlperf_logging")
pytest.importorskip("sklearn")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def mlperf_mini(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import resnet50_mlperf_mini
    return resnet50_mlperf_mini


def mllog_lines(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.startswith(":::MLLOG ")]
    return [json.loads(line[len(":::MLLOG "):]) for line in lines]


def test_mlperf_mini_time_to_accuracy_logs_and_summary(mlperf_mini, tmp_path, capsys):
    log_file = tmp_path / "mllog.txt"
    status = mlperf_mini.main(["--model", "cnn", "--image-size", "8", "--tiles", "64", "--epochs", "4",
                               "--target-accuracy", "0.5", "--log-file", str(log_file)])
    assert status == 0
    events = mllog_lines(log_file)
    keys = [e["key"] for e in events]
    order = ["init_start", "init_stop", "run_start", "epoch_start", "eval_accuracy", "epoch_stop", "run_stop"]
    assert [k for k in keys if k in order][:len(order)] == order
    assert keys.count("run_stop") == 1 and events[keys.index("run_stop")]["metadata"]["status"] == "success"
    accuracy = [e["value"] for e in events if e["key"] == "eval_accuracy"]
    assert accuracy[-1] >= 0.5 and all(0 <= a <= 1 for a in accuracy)
    assert all(e["value"]["throughput"] > 0 for e in events if e["key"] == "tracked_stats")
    out = capsys.readouterr().out
    assert "time to 50% validation accuracy" in out and "IPU throughput (simulated)" in out
    assert "busiest tile" in out and "(2 executables compiled)" in out    # train and eval steps, once each


def test_mlperf_mini_synthetic_throughput_and_cpu_comparison(mlperf_mini, capsys):
    status = mlperf_mini.main(["--model", "cnn", "--synthetic", "--image-size", "8", "--batch-size", "8",
                               "--steps", "3", "--tiles", "64", "--compare-cpu"])
    assert status == 0
    out = capsys.readouterr().out
    assert "synthetic data" in out and "TensorFlow on the CPU" in out and "host time ratio" in out
    assert "(1 executable compiled)" in out                                  # no evaluation step


def test_mlperf_mini_micro_batches_accumulate_gradients(mlperf_mini, tmp_path, capsys):
    """--micro-batch-size: the device takes micro-batches, the optimizer updates once per global batch (Keras'
    gradient accumulation, as Graphcore's MLPerf runs); the log says both sizes."""
    log_file = tmp_path / "mllog.txt"
    status = mlperf_mini.main(["--model", "cnn", "--image-size", "8", "--tiles", "64", "--epochs", "6",
                               "--batch-size", "16", "--micro-batch-size", "8", "--target-accuracy", "0.5",
                               "--log-file", str(log_file)])
    assert status == 0
    events = {e["key"]: e["value"] for e in mllog_lines(log_file)}
    assert events["global_batch_size"] == 16 and events["micro_batch_size"] == 8
    assert events["gradient_accumulation_steps"] == 2
    out = capsys.readouterr().out
    assert "batch 16 (8 a step)" in out and "cycles a step of 8" in out
    with pytest.raises(SystemExit):
        mlperf_mini.main(["--model", "cnn", "--batch-size", "16", "--micro-batch-size", "5"])
