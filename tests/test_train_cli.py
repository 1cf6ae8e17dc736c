"""``python -m imbgan_core.train``: config errors, one real run with metrics / grid / checkpoint, and --resume."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from imbgan_core.config import apply_overrides
from imbgan_core.train import main

from helpers_gan import TINY


@pytest.fixture()
def config_file(tmp_path):
    data = apply_overrides(TINY, {"train.steps": 20, "train.eval_every": 10, "name": "cli-test"})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_config_exits_2_naming_every_key_and_writes_nothing(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--config", str(config_file), "--out", str(out), "--set", "train.lr_g=-1",
                 "--set", "method.lambda=3", "--set", "model.widht=2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.lr_g" in err and "method.lambda" in err and "model.widht" in err
    assert main(["--config", str(config_file), "--out", str(out), "--set", "train.device=gpu7",
                 "--set", "train.diffaugment=color,flip"]) == 2
    err = capsys.readouterr().err
    assert "train.device" in err and "train.diffaugment" in err and "'flip'" in err
    assert not out.exists()


def test_missing_config_file_and_method_model_conflict(tmp_path, config_file, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["--config", str(config_file), "--out", str(tmp_path / "o"),
                 "--set", "model.g_conditional=false"]) == 2
    assert "model.d_conditional" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_inception_weights_exit_2_before_anything_is_written(config_file, tmp_path, monkeypatch, capsys,
                                                                    annotator):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    out = tmp_path / "o"
    assert main(["--config", str(config_file), "--out", str(out), "--set", "eval.features=inception"]) == 2
    err = capsys.readouterr().err
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "eval.weights_path" in err
    assert not out.exists()


def test_module_entry_point_reports_config_errors(config_file, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "imbgan_core.train", "--config", str(config_file),
                           "--out", str(tmp_path / "o"), "--set", "train.loss=wasserstein"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.loss" in proc.stderr


@pytest.mark.slow
def test_train_writes_metrics_grid_checkpoint_and_resumes(config_file, tmp_path, capsys, annotator):
    out = tmp_path / "run"
    assert main(["--config", str(config_file), "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 10/20") and "intra_fid" in lines[0] and "class_accuracy" in lines[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 20 and [h["step"] for h in metrics["history"]] == [10, 20]
    assert {"intra_fid", "class_accuracy"} <= set(metrics["scalars"])
    assert len(metrics["per_class"]["fid"]) == 10
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["steps_done"] == 20

    assert main(["--config", str(config_file), "--out", str(out)]) == 2  # would overwrite: refused
    assert "--resume" in capsys.readouterr().err

    assert main(["--out", str(out), "--resume", "--steps", "30"]) == 0  # config from the checkpoint
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 30 and [h["step"] for h in metrics["history"]] == [10, 20, 30]
    assert main(["--out", str(out), "--resume", "--set", "train.lr_d=0.1"]) == 2  # differs beyond train.steps
    assert "train.lr_d" in capsys.readouterr().err


@pytest.mark.slow
def test_progress_lines_between_evaluations_leave_the_run_unchanged(config_file, tmp_path, capsys, annotator):
    """Issue #16: a long ``eval_every`` printed nothing for minutes. A line per step here (``--progress-every 0``),
    and the same metrics and weights as the run that printed none."""
    quiet, chatty = tmp_path / "quiet", tmp_path / "chatty"
    assert main(["--config", str(config_file), "--out", str(quiet), "--steps", "10"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("training: ")]
    assert main(["--config", str(config_file), "--out", str(chatty), "--steps", "10", "--progress-every", "0"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("training: ")]
    assert len(lines) == 10 and lines[2].startswith("training: step 3/10 | ") and "steps/s" in lines[2]
    assert "next evaluation at step 10" in lines[2] and "| ETA " in lines[2]
    assert lines[-1].endswith("ETA 0s")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (quiet, chatty))
    assert a["scalars"] == b["scalars"] and a["losses"] == b["losses"]
    wa, wb = (torch.load(d / "checkpoint.pt", weights_only=True)["G"] for d in (quiet, chatty))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
