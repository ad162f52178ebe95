"""Supervised training and evaluation scripts: config checks, exact resume, atomic states, NaN handling, outputs
that DepthEstimator and evaluate.py read. Tiny runs: ViT-S at 42 px on a few 7-Scenes frames."""

import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from depth_ros import supervised as train_supervised
from depth_ros.checkpoints import CheckpointMetadata, load_checkpoint, network_focal, save_checkpoint
from depth_ros.data import open_rgbd
from depth_ros.estimator import DepthEstimator
from depth_ros.models import DepthAnythingV2

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


evaluate = _script("evaluate")


def tiny_config(data_path: Path, out: Path, **sections) -> dict:
    """6 training frames, 2 validation frames, 42 px, 3 steps per epoch, 2 epochs."""
    config = {
        "model": {"encoder": "vits", "max_depth": 6.0},
        "data": {"path": str(data_path), "split": {"train_frames": "0:6", "val_frames": "70:72"}, "input_size": 42},
        "optim": {"epochs": 2, "batch_size": 2, "lr": "1e-4", "warmup_steps": 1},
        "run": {"output_dir": str(out)},
    }
    for section, values in sections.items():
        config[section].update(values)
    return config


def train(config: dict, **kwargs) -> dict:
    return train_supervised.train(train_supervised.config_from_dict(config), **kwargs)


def losses(out: Path) -> dict[int, float]:
    with (out / "log.csv").open() as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]}


@pytest.fixture(scope="module")
def kitchen(shared_data) -> Path:
    return shared_data / "7scenes_redkitchen"


@pytest.fixture(scope="module")
def finished_run(kitchen, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(tiny_config(kitchen, out))
    return out, summary


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def test_config_reports_unknown_and_missing_keys_and_bad_values(tmp_path):
    config = tiny_config(tmp_path, tmp_path)
    assert train_supervised.config_from_dict(config).optim.lr == 1e-4  # YAML reads 1e-4 as a string
    bad = tiny_config(tmp_path, tmp_path, optim={"lrr": 1.0})
    with pytest.raises(train_supervised.ConfigError, match=r"config.optim: unknown key 'lrr' \(known: epochs"):
        train_supervised.config_from_dict(bad)
    with pytest.raises(train_supervised.ConfigError, match="config.run: missing key 'output_dir'"):
        train_supervised.config_from_dict(tiny_config(tmp_path, tmp_path) | {"run": {}})
    with pytest.raises(train_supervised.ConfigError, match="config.optim.epochs: expected int, got 'ten'"):
        train_supervised.config_from_dict(tiny_config(tmp_path, tmp_path, optim={"epochs": "ten"}))
    with pytest.raises(train_supervised.ConfigError, match="data.input_size must be a positive multiple of 14"):
        train_supervised.config_from_dict(tiny_config(tmp_path, tmp_path, data={"input_size": 50}))
    with pytest.raises(train_supervised.ConfigError, match="model.checkpoint: required for init encoder"):
        train_supervised.config_from_dict(tiny_config(tmp_path, tmp_path, model={"init": "encoder"}))
    with pytest.raises(train_supervised.ConfigError, match=r"config.data.split: unknown key 'val'"):
        train_supervised.config_from_dict(tiny_config(tmp_path, tmp_path, data={"split": {"val": "1:2"}}))


def test_cli_exits_with_one_readable_line_on_bad_input(tmp_path, capsys, kitchen):
    assert train_supervised.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train_supervised: error: {tmp_path / 'missing.yaml'}: no such config file"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path, run={"mixed_precision": "fp8"})))
    assert train_supervised.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "train_supervised: error: run.mixed_precision: 'fp8' is not one of no, fp16, bf16"]
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pth"), "--data", str(tmp_path), "--out",
                          str(tmp_path / "ev")]) == 2
    assert capsys.readouterr().err.startswith(f"evaluate: error: {tmp_path}: not a TUM-format folder")
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pth"), "--data", str(kitchen), "--out",
                          str(tmp_path / "ev")]) == 2
    assert capsys.readouterr().err.startswith(f"evaluate: error: {tmp_path / 'none.pth'}: no such checkpoint file")


def test_encoder_only_and_full_initialisation(tmp_path):
    torch.manual_seed(0)
    source = DepthAnythingV2("vits", "metric", 6.0)
    path = save_checkpoint(tmp_path / "src.pth", source, CheckpointMetadata("vits", "metric", 6.0, 42, None))
    reference = source.state_dict()
    model_cfg = train_supervised.ModelConfig
    encoder_only = train_supervised.build_training_model(model_cfg("vits", 6.0, "encoder", str(path))).state_dict()
    full = train_supervised.build_training_model(model_cfg("vits", 6.0, "checkpoint", str(path))).state_dict()
    for key, value in reference.items():
        assert torch.equal(full[key], value)
        if key.startswith("pretrained."):
            assert torch.equal(encoder_only[key], value)
    head_weights = [k for k in reference if k.startswith("depth_head.") and k.endswith("weight")]
    assert not any(torch.equal(encoder_only[k], reference[k]) for k in head_weights)


# ---------------------------------------------------------------------------------------------------------------
# Runs


def test_finished_run_writes_logs_plot_summary_and_a_best_checkpoint_the_estimator_loads(finished_run, kitchen):
    out, summary = finished_run
    for name in ("log.csv", "curves.png", "summary.json", "config.yaml", "best.pth"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["finished"] and summary["step"] == 6 and summary["total_steps"] == 6
    assert set(losses(out)) == {1, 2, 3, 4, 5, 6}
    assert {"baseline_gt_median", "before", "best", "final"} <= set(summary)
    assert [p.name for p in train_supervised.state_dirs(out)] == ["step_0000003", "step_0000006"]

    estimator = DepthEstimator.from_checkpoint(out / "best.pth", device="cpu", input_size=42)
    camera = open_rgbd(kitchen).camera
    assert estimator.metadata == CheckpointMetadata(
        "vits", "metric", 6.0, 42, network_focal(camera.fx, camera.width, camera.height, 42))
    assert estimator.metadata.train_focal_px == pytest.approx(585.0 * 56 / 640)
    depth = estimator.infer(open_rgbd(kitchen)[70].rgb, fx=camera.fx)
    assert depth.shape == (480, 640) and np.isfinite(depth).all() and 0 < depth.min() and depth.max() < 6.0
    state, _ = load_checkpoint(out / "best.pth")
    assert set(state) == set(DepthAnythingV2("vits").state_dict())  # the official key layout


def test_evaluate_cli_reproduces_the_training_validation_of_the_best_checkpoint(finished_run, kitchen, tmp_path):
    out, summary = finished_run
    assert evaluate.main(["--checkpoint", str(out / "best.pth"), "--data", str(kitchen), "--frames", "70:72",
                          "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "summary.json").read_text())
    assert set(result) == {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "silog",
                           "n_frames"}
    assert result["n_frames"] == 2
    for key in ("abs_rel", "rmse", "delta1", "silog"):
        assert result[key] == pytest.approx(summary["best"][key], rel=1e-5), key
    with (tmp_path / "per_frame.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["70", "71"]
    assert np.mean([float(r["abs_rel"]) for r in rows]) == pytest.approx(result["abs_rel"])
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    # median alignment can only help a metric model's AbsRel-like scale error on these frames
    assert evaluate.main(["--checkpoint", str(out / "best.pth"), "--data", str(kitchen), "--frames", "70:72",
                          "--align", "median", "--out", str(tmp_path / "median")]) == 0
    median = json.loads((tmp_path / "median" / "summary.json").read_text())
    assert median["silog"] == pytest.approx(result["silog"], rel=0.05)  # SiLog is nearly scale-invariant


def test_resume_reproduces_the_uninterrupted_run(kitchen, tmp_path):
    # batch 1 x 2 accumulated: stopping at step 4 interrupts epoch 1 in its middle
    optim = {"batch_size": 1, "grad_accum_steps": 2}
    train(tiny_config(kitchen, tmp_path / "a", optim=optim))
    partial = train(tiny_config(kitchen, tmp_path / "b", optim=optim), stop_after_steps=4)
    assert partial["step"] == 4 and not partial["finished"]
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(tiny_config(kitchen, tmp_path / "b", optim=optim))
    resumed = train(tiny_config(kitchen, tmp_path / "b", optim=optim), resume=True)
    uninterrupted, continued = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert set(continued) == set(uninterrupted) == {1, 2, 3, 4, 5, 6}
    for step in (5, 6):
        assert continued[step] == pytest.approx(uninterrupted[step], rel=1e-6, abs=0), step
    assert resumed["final"]["abs_rel"] == pytest.approx(
        json.loads((tmp_path / "a" / "summary.json").read_text())["final"]["abs_rel"], rel=1e-6)


def test_a_save_killed_midway_leaves_the_last_good_state(kitchen, tmp_path, monkeypatch):
    from accelerate import Accelerator

    out = tmp_path / "run"
    real_save_state = Accelerator.save_state
    calls = []

    def dying_save_state(self, output_dir, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # the end-of-training save dies after writing part of its files
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            Path(output_dir, "pytorch_model.bin").write_bytes(b"partial")
            raise KeyboardInterrupt("killed while saving")
        return real_save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", dying_save_state)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(kitchen, out))
    monkeypatch.undo()
    assert [p.name for p in train_supervised.state_dirs(out)] == ["step_0000003"]
    assert (out / "states" / "step_0000006.tmp").is_dir()
    load_checkpoint(out / "best.pth")  # the best model file is intact too
    summary = train(tiny_config(kitchen, out), resume=True)
    assert summary["finished"] and summary["step"] == 6
    assert [p.name for p in train_supervised.state_dirs(out)] == ["step_0000003", "step_0000006"]


def test_non_finite_losses_are_reported_skipped_and_stop_the_run_when_repeated(kitchen, tmp_path, monkeypatch,
                                                                               caplog):
    real_loss = train_supervised.silog_loss
    calls = []

    def sometimes_nan(pred, target, valid):
        calls.append(1)
        loss = real_loss(pred, target, valid)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(train_supervised, "silog_loss", sometimes_nan)
    run_cfg = {"validate_at_start": False}
    with caplog.at_level(logging.WARNING):
        train(tiny_config(kitchen, tmp_path / "one", optim={"epochs": 1}, run=run_cfg))
    assert "step 1: non-finite loss (nan) on the batch of frames ['frames/frame-" in caplog.text
    with (tmp_path / "one" / "log.csv").open() as f:
        skipped = {int(r["step"]): r["skipped"] for r in csv.DictReader(f) if r["skipped"]}
    assert skipped == {1: "0", 2: "1", 3: "0"}

    monkeypatch.setattr(train_supervised, "silog_loss", lambda p, t, v: real_loss(p, t, v) * float("inf"))
    with pytest.raises(train_supervised.NonFiniteLossError, match="3 non-finite losses in a row .* stopping"):
        train(tiny_config(kitchen, tmp_path / "all", run=run_cfg))


def test_accelerate_launch_runs_the_script(kitchen, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(kitchen, tmp_path / "run", run={"validate_at_start": False})))
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16",
         "--dynamo_backend", "no", str(REPO / "training" / "train_supervised.py"), "--config", str(config),
         "--stop-after-steps", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in train_supervised.state_dirs(tmp_path / "run")] == ["step_0000001"]
    assert "best checkpoint:" in result.stdout


def test_shipped_7scenes_config_is_valid_and_splits_frames_0_69_and_70_99(shared_data):
    cfg = train_supervised.load_config(REPO / "config" / "train_7scenes.yaml")
    assert cfg.data.split.indices(np.arange(100) * 0.1) == (list(range(70)), list(range(70, 100)))
    assert Path(cfg.data.path).name == "7scenes_redkitchen" and cfg.data.depth_scale == 1000


def test_evaluate_cli_scores_a_packnet_checkpoint_as_the_estimator_predicts(kitchen, tmp_path):
    from depth_ros.metrics import evaluate_depth
    from depth_ros.models import create_model

    torch.manual_seed(0)
    metadata = CheckpointMetadata("tiny", "metric", 10.0, 64, 300.0, architecture="packnet")
    path = save_checkpoint(tmp_path / "packnet.pth", create_model(metadata), metadata)
    assert evaluate.main(["--checkpoint", str(path), "--data", str(kitchen), "--frames", "70:72", "--device", "cpu",
                          "--figure-frames", "0", "--out", str(tmp_path / "eval")]) == 0
    with (tmp_path / "eval" / "per_frame.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["70", "71"]
    estimator = DepthEstimator.from_checkpoint(path, device="cpu")
    source = open_rgbd(kitchen)
    for row in rows:
        frame = source[int(row["frame"])]
        expected = evaluate_depth(estimator.infer(frame.rgb, fx=frame.camera.fx), frame.depth, min_depth=0.001,
                                  max_depth=10.0)
        assert float(row["abs_rel"]) == pytest.approx(expected["abs_rel"], rel=1e-6)
