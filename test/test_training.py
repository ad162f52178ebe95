"""Supervised training and evaluation scripts: config checks, exact resume, atomic states, NaN handling, outputs
that DepthEstimator and evaluate.py read. Tiny runs: ViT-S at 42 px on a few 7-Scenes frames."""

import csv
import dataclasses
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from depth_ros.checkpoints import CheckpointMetadata, load_checkpoint, network_focal, save_checkpoint
from depth_ros.data import open_rgbd
from depth_ros.estimator import DepthEstimator
from depth_ros.learning import config as training_config
from depth_ros.learning import engine, objectives, trainable
from depth_ros.learning.cli import main as trainer_main
from depth_ros.models import DepthAnythingV2
from depth_ros.published_depth import depth_factor
from depth_ros.testing import random_checkpoint

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
    return engine.train(training_config.config_from_dict(config), **kwargs)


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
    assert training_config.config_from_dict(config).optim.lr == 1e-4  # YAML reads 1e-4 as a string
    bad = tiny_config(tmp_path, tmp_path, optim={"lrr": 1.0})
    with pytest.raises(training_config.ConfigError, match=r"config.optim: unknown key 'lrr' \(known: epochs"):
        training_config.config_from_dict(bad)
    with pytest.raises(training_config.ConfigError, match="config.run: missing key 'output_dir'"):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path) | {"run": {}})
    with pytest.raises(training_config.ConfigError, match="config.optim.epochs: expected int, got 'ten'"):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path, optim={"epochs": "ten"}))
    with pytest.raises(training_config.ConfigError, match="data.input_size must be a positive multiple of 14"):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path, data={"input_size": 50}))
    with pytest.raises(training_config.ConfigError, match="model.checkpoint: required for init encoder"):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path, model={"init": "encoder"}))
    with pytest.raises(training_config.ConfigError, match=r"config.data.split: unknown key 'val'"):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path, data={"split": {"val": "1:2"}}))


def test_cli_exits_with_one_readable_line_on_bad_input(tmp_path, capsys, kitchen):
    assert trainer_main(["--config", str(tmp_path / "missing.yaml")], "silog", "train_supervised") == 1
    err = capsys.readouterr().err.strip()
    assert err == f"train_supervised: error: {tmp_path / 'missing.yaml'}: no such config file"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path, run={"mixed_precision": "fp8"})))
    assert trainer_main(["--config", str(path)], "silog", "train_supervised") == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "train_supervised: error: run.mixed_precision: 'fp8' is not one of no, fp16, bf16"]
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pth"), "--data", str(tmp_path), "--out",
                          str(tmp_path / "ev")]) == 1
    assert capsys.readouterr().err.startswith(f"evaluate: error: {tmp_path}: not a TUM-format folder")
    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pth"), "--data", str(kitchen), "--out",
                          str(tmp_path / "ev")]) == 1
    assert capsys.readouterr().err.startswith(f"evaluate: error: {tmp_path / 'none.pth'}: no such checkpoint file")


@pytest.mark.parametrize("steps", ["-1", "0"])
def test_cli_refuses_a_stop_after_steps_that_never_stops(tmp_path, capsys, steps):
    """``--stop-after-steps -1`` started an endless run; it is refused before any config is read."""
    with pytest.raises(SystemExit) as exit_info:
        trainer_main(["--config", str(tmp_path / "any.yaml"), "--stop-after-steps", steps], "silog",
                     "train_supervised")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"train_supervised: error: --stop-after-steps must be >= 1, got {steps}"


def test_encoder_only_and_full_initialisation(tmp_path):
    torch.manual_seed(0)
    source = DepthAnythingV2("vits", "metric", 6.0)
    path = save_checkpoint(tmp_path / "src.pth", source, CheckpointMetadata("vits", "metric", 6.0, 42, None))
    reference = source.state_dict()
    model_cfg = training_config.ModelConfig
    encoder_only = trainable.build_training_model(model_cfg("vits", 6.0, "encoder", str(path))).state_dict()
    full = trainable.build_training_model(model_cfg("vits", 6.0, "checkpoint", str(path))).state_dict()
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
    assert [p.name for p in engine.state_dirs(out)] == ["step_0000003", "step_0000006"]

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
                           "median_ratio", "n_frames", "skipped_frames"}
    assert result["skipped_frames"] == []
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


def _kitchen_with_an_empty_depth_frame(kitchen: Path, folder: Path, frames: int, empty: int) -> Path:
    """The first ``frames`` frames of the 7-Scenes folder (files linked), frame ``empty``'s depth all zeros."""
    (folder / "frames").mkdir(parents=True)
    for name in ("camera-intrinsics.txt", "groundtruth_tum.txt"):
        (folder / name).symlink_to(kitchen / name)
    for index_file in ("rgb.txt", "depth.txt"):
        lines = (kitchen / index_file).read_text().splitlines()
        header, entries = [line for line in lines if line.startswith("#")], [line for line in lines
                                                                            if not line.startswith("#")]
        (folder / index_file).write_text("\n".join(header + entries[:frames]) + "\n")
        for position, entry in enumerate(entries[:frames]):
            relative = entry.split()[1]
            if index_file == "depth.txt" and position == empty:
                cv2.imwrite(str(folder / relative), np.zeros((480, 640), np.uint16))
            else:
                (folder / relative).symlink_to(kitchen / relative)
    return folder


def test_evaluate_skips_and_names_a_frame_without_ground_truth(kitchen, checkpoint, tmp_path, capsys, caplog):
    data = _kitchen_with_an_empty_depth_frame(kitchen, tmp_path / "data", frames=3, empty=1)
    common = ["--checkpoint", str(checkpoint), "--data", str(data), "--device", "cpu", "--figure-frames", "0"]
    assert evaluate.main([*common, "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    empty_name = open_rgbd(data)[1].name
    assert summary["n_frames"] == 2 and summary["skipped_frames"] == [empty_name]
    assert f"skipping frame 1 ({empty_name}): no valid ground-truth pixel in [0.001, 20] m" in caplog.text
    with (tmp_path / "ev" / "per_frame.csv").open() as f:
        assert [r["frame"] for r in csv.DictReader(f)] == ["0", "2"]
    capsys.readouterr()
    for depth_args, message in [
        (["--max-depth", "-5"], "--max-depth must be > 0 m, got -5.0"),
        (["--max-depth", "0"], "--max-depth must be > 0 m, got 0.0"),
        (["--min-depth", "50"], "--min-depth (50.0 m) must be below the maximum depth (20.0 m, the model's range"),
        (["--min-depth", "1", "--max-depth", "1"], "--min-depth (1.0 m) must be below the maximum depth (1.0 m"),
        (["--min-depth", "5", "--max-depth", "6"], "none of the 3 frames has a valid ground-truth pixel in [5.0, 6.0]"),
    ]:
        assert evaluate.main([*common, "--out", str(tmp_path / "bad"), *depth_args]) == 1, depth_args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("evaluate: error: ") and message in err[-1], (depth_args, err)


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
    assert [p.name for p in engine.state_dirs(out)] == ["step_0000003"]
    assert (out / "states" / "step_0000006.tmp").is_dir()
    load_checkpoint(out / "best.pth")  # the best model file is intact too
    summary = train(tiny_config(kitchen, out), resume=True)
    assert summary["finished"] and summary["step"] == 6
    assert [p.name for p in engine.state_dirs(out)] == ["step_0000003", "step_0000006"]


def test_non_finite_losses_are_reported_skipped_and_stop_the_run_when_repeated(kitchen, tmp_path, monkeypatch,
                                                                               caplog):
    real_loss = objectives.silog_loss
    calls = []

    def sometimes_nan(pred, target, valid):
        calls.append(1)
        loss = real_loss(pred, target, valid)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(objectives, "silog_loss", sometimes_nan)
    run_cfg = {"validate_at_start": False}
    with caplog.at_level(logging.WARNING):
        train(tiny_config(kitchen, tmp_path / "one", optim={"epochs": 1}, run=run_cfg))
    assert "step 1: non-finite loss (nan) on the batch of frames ['frames/frame-" in caplog.text
    with (tmp_path / "one" / "log.csv").open() as f:
        skipped = {int(r["step"]): r["skipped"] for r in csv.DictReader(f) if r["skipped"]}
    assert skipped == {1: "0", 2: "1", 3: "0"}

    monkeypatch.setattr(objectives, "silog_loss", lambda p, t, v: real_loss(p, t, v) * float("inf"))
    with pytest.raises(engine.NonFiniteLossError, match="3 non-finite losses in a row .* stopping"):
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
    assert [p.name for p in engine.state_dirs(tmp_path / "run")] == ["step_0000001"]
    assert "best checkpoint:" in result.stdout


def test_shipped_7scenes_config_is_valid_and_splits_frames_0_69_and_70_99(shared_data):
    cfg = training_config.load_config(REPO / "config" / "train_7scenes.yaml")
    assert cfg.data.split.indices(np.arange(100) * 0.1) == (list(range(70)), list(range(70, 100)))
    assert Path(cfg.data.path).name == "7scenes_redkitchen" and cfg.data.depth_scale == 1000


def test_overrides_change_values_and_are_validated_like_the_file():
    path = REPO / "config" / "train_packnet_tiny_7scenes_scaled.yaml"
    scaled = training_config.load_config(path)
    true_scale = training_config.load_config(path, ["data.depth_scale=1000", "run.output_dir=../runs/x",
                                                    "data.augmentation.hflip=false"])
    assert scaled.data.depth_scale == pytest.approx(1000 / 1.3) and true_scale.data.depth_scale == 1000
    assert true_scale.run.output_dir == "../runs/x" and not true_scale.data.augmentation.hflip
    assert true_scale.model == scaled.model and true_scale.data.split == scaled.data.split
    for bad, message in (("data.depth_scale", "section.key=value"), ("data.depth_scale=-1", "depth_scale"),
                         ("data.nope=1", "unknown key 'nope'"), ("data.path.x=1", "path is not a section")):
        with pytest.raises(training_config.ConfigError, match=message):
            training_config.load_config(path, [bad])


def test_shipped_distillation_config_names_a_teacher_and_the_packnet_student():
    cfg = training_config.load_config(REPO / "config" / "distill_packnet_tiny_7scenes.yaml")
    assert cfg.teacher == training_config.TeacherConfig("../runs/odom_supervised/best.pth", "replace")
    assert (cfg.model.architecture, cfg.model.encoder) == ("packnet", "tiny")
    assert cfg.data.split.indices(np.arange(600) * 0.1) == (list(range(450)), list(range(450, 600)))


# ---------------------------------------------------------------------------------------------------------------
# Self-supervised objective


def photometric_config(data_path: Path, out: Path, **sections) -> dict:
    """Targets 103..108 of the 30 Hz sequence with sources 3 frames (~2 cm) either side, TUM trajectory poses."""
    config = tiny_config(data_path, out, data={"split": {"train_frames": "100:112", "val_frames": "450:452"}},
                         optim={"epochs": 1})
    config["self_supervised"] = {"poses": {"kind": "tum", "topic": None}, "source_offsets": [-3, 3],
                                 "min_translation": 0.005}
    for section, values in sections.items():
        config[section].update(values)
    return config


@pytest.fixture(scope="module")
def odom_tum(shared_data) -> Path:
    return shared_data / "7scenes_redkitchen_odom" / "tum"


def test_photometric_run_trains_without_labels_and_its_checkpoint_starts_the_supervised_trainer(odom_tum, tmp_path,
                                                                                                 monkeypatch):
    def no_labels(*args, **kwargs):
        raise AssertionError("the photometric objective must not use depth labels")

    monkeypatch.setattr(objectives, "silog_loss", no_labels)
    summary = engine.train(training_config.config_from_dict(photometric_config(odom_tum, tmp_path / "ss")),
                           objective="photometric")
    monkeypatch.undo()
    assert summary["objective"] == "photometric" and summary["finished"]
    assert summary["train_samples"] == 6 and summary["dropped_targets"] == {"source outside the split": 6}
    with (tmp_path / "ss" / "log.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    assert len(rows) == 3 and all(0 < float(r["photometric"]) < 1 and 0 < float(r["kept"]) <= 1 for r in rows)
    start = tiny_config(odom_tum, tmp_path / "sup", model={"init": "checkpoint",
                                                           "checkpoint": str(tmp_path / "ss" / "best.pth")},
                        optim={"epochs": 1}, data={"split": {"train_frames": "100:106", "val_frames": "450:452"}})
    assert engine.train(training_config.config_from_dict(start))["before"]["abs_rel"] == pytest.approx(
        summary["best"]["abs_rel"], rel=1e-6)


def test_a_stationary_camera_gives_no_sample_and_a_clear_error(odom_tum, tmp_path, monkeypatch):
    still = np.tile(np.eye(4), (600, 1, 1))
    monkeypatch.setattr(objectives, "camera_poses", lambda cfg, source: (still, np.ones(600, bool)))
    with pytest.raises(ValueError, match=r"no usable training sample: 0 training samples; dropped targets: "
                                         r"6 source outside the split, 6 stationary"):
        engine.train(training_config.config_from_dict(photometric_config(odom_tum, tmp_path)), objective="photometric")


def test_self_supervised_config_errors_name_the_key(tmp_path):
    bad = photometric_config(tmp_path, tmp_path)
    bad["self_supervised"]["source_offsets"] = [0, 2]
    with pytest.raises(training_config.ConfigError, match="source_offsets must be a non-empty list of non-zero"):
        training_config.config_from_dict(bad)
    bad["self_supervised"] = {"poses": {"kind": "gps"}}
    with pytest.raises(training_config.ConfigError, match="self_supervised.poses: pose source kind 'gps': choose"):
        training_config.config_from_dict(bad)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("clip_grad_norm", -1, "optim.clip_grad_norm must be > 0, got -1.0"),
    ("warmup_steps", -5, "optim.warmup_steps must be >= 0, got -5"),
    ("weight_decay", -0.1, "optim.weight_decay must be >= 0"),
    ("lr", "nan", "optim.lr must be > 0, got nan"),
])
def test_harmful_optimiser_values_are_refused(tmp_path, key, value, message):
    with pytest.raises(training_config.ConfigError, match=message):
        training_config.config_from_dict(tiny_config(tmp_path, tmp_path, optim={key: value}))


@pytest.mark.parametrize("trainable_kind", ["head", "norms_biases", "lora"])
def test_parameter_subsets_train_only_their_part_and_save_the_plain_layout(trainable_kind):
    torch.manual_seed(0)
    model = trainable.build_training_model(training_config.ModelConfig("vits", 6.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, groups = trainable.prepare_trainable(model, training_config.OptimConfig(trainable=trainable_kind,
                                                                                   lr=1e-2))
    optimizer = trainable.build_optimizer(groups, training_config.OptimConfig(lr=1e-2))
    model(torch.randn(1, 3, 42, 42)).mean().backward()
    optimizer.step()
    after = trainable.deployable_state_dict(model)
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed
    if trainable_kind == "head":
        assert all(k.startswith("depth_head.") for k in changed)
    elif trainable_kind == "norms_biases":
        assert all(k.endswith("bias") or "norm" in k for k in changed)
    else:
        assert all(k.startswith("pretrained.") and k.endswith("weight") for k in changed)


def test_the_scale_group_learns_one_factor_that_the_saved_checkpoint_reproduces(tmp_path):
    torch.manual_seed(0)
    model = trainable.build_training_model(training_config.ModelConfig("vits", 6.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.randn(1, 3, 42, 42)
    with torch.no_grad():
        start = model.eval()(image)
    scaled, groups = trainable.prepare_trainable(model, training_config.OptimConfig(trainable="scale", lr=0.1))
    assert [p for g in groups for p in g["params"]] == [scaled.log_scale]
    optimizer = trainable.build_optimizer(groups, training_config.OptimConfig(lr=0.1, weight_decay=0.0))
    scaled.train()
    for _ in range(3):  # pull the depth up: the factor grows ~10 % per step
        (-scaled(image).mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert scaled.scale == pytest.approx(math.exp(0.3), rel=0.02)
    state = trainable.deployable_state_dict(scaled)
    assert set(state) == set(before) and all(torch.equal(before[k], state[k]) for k in before)  # weights fixed
    metadata = trainable.deployable_metadata(scaled, CheckpointMetadata("vits", "metric", 6.0, 42))
    assert (metadata.max_depth, metadata.scale) == (6.0, pytest.approx(scaled.scale))  # head range kept
    estimator = DepthEstimator.from_checkpoint(save_checkpoint(tmp_path / "scaled.pth", state, metadata), device="cpu")
    with torch.no_grad():
        reloaded = estimator.model(image) * depth_factor(estimator.metadata)
    torch.testing.assert_close(reloaded, start * scaled.scale, rtol=1e-5, atol=1e-6)


def test_photometric_run_on_a_bag_without_depth_uses_odometry_and_tf_static(shared_data, tmp_path):
    bag = shared_data / "7scenes_redkitchen_odom" / "bag"
    config = photometric_config(bag, tmp_path, data={"rgb_topic": "/camera/color/image_raw/compressed",
                                                     "depth_topic": None})
    config["self_supervised"]["poses"] = {"kind": "odometry", "topic": "/odom"}
    summary = engine.train(training_config.config_from_dict(config), objective="photometric")
    assert summary["finished"] and summary["train_samples"] == 6
    assert "best" not in summary and "baseline_gt_median" not in summary  # nothing to score against
    assert DepthEstimator.from_checkpoint(tmp_path / "best.pth", device="cpu").metadata.input_size == 42
    with pytest.raises(ValueError, match="supervised training needs depth labels"):
        engine.train(training_config.config_from_dict(config | {"run": {"output_dir": str(tmp_path / "sup")}}))


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


def test_resume_never_unpickles_planted_code(kitchen, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(kitchen, out, optim={"epochs": 1}, run={"validate_at_start": False}))
    (state,) = engine.state_dirs(out)
    marker = tmp_path / "pwned"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    (state / "random_states_0.pkl").write_bytes(pickle.dumps(Planted()))  # accelerate loads it weights_only
    train(tiny_config(kitchen, out, optim={"epochs": 2}, run={"validate_at_start": False}), resume=True)
    assert not marker.exists()
    state = engine.state_dirs(out)[-1]
    (state / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Planted()))  # accelerate would unpickle it freely
    with pytest.raises(engine.StateError, match="step_0000006: not a usable training state"):
        train(tiny_config(kitchen, out, optim={"epochs": 3}, run={"validate_at_start": False}), resume=True)
    assert not marker.exists()
    (state / engine.PROGRESS).write_text("{not json")
    with pytest.raises(engine.StateError, match="progress.json: JSONDecodeError"):
        train(tiny_config(kitchen, out, optim={"epochs": 2}), resume=True)


def test_a_truncated_bag_is_one_line_from_the_trainers_and_evaluate(shared_data, tmp_path, capsys):
    source = shared_data / "7scenes_redkitchen_20f_bag" / "7scenes_redkitchen_20f.mcap"
    bag = tmp_path / "cut.mcap"
    bag.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump(tiny_config(bag, tmp_path / "run")))
    for objective, name in (("silog", "train_supervised"), ("photometric", "train_self_supervised")):
        assert trainer_main(["--config", str(config)], objective, name) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}: error: {bag}: cannot open bag"), lines
    assert evaluate.main(["--checkpoint", "none.pth", "--data", str(bag), "--out", str(tmp_path / "ev")]) == 1
    assert capsys.readouterr().err.strip().startswith(f"evaluate: error: {bag}: cannot open bag")


# ---------------------------------------------------------------------------------------------------------------
# Distillation (teacher depth as labels)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A random metric ViT-S teacher at 42 px; its training focal (60 px) makes focal correction scale by ~0.85."""
    return random_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pth", input_size=42, max_depth=6.0,
                             train_focal_px=60.0)


def teacher_config(data_path: Path, out: Path, checkpoint: Path, **teacher_values) -> dict:
    """:func:`tiny_config` for one epoch (3 steps), with a CPU teacher replacing the sensor's depth."""
    config = tiny_config(data_path, out, optim={"epochs": 1})
    config["teacher"] = {"checkpoint": str(checkpoint), "mode": "replace", "device": "cpu"} | teacher_values
    return config


def test_distillation_replace_trains_on_the_teachers_depth_of_the_unaugmented_frames(kitchen, teacher, tmp_path):
    cfg = training_config.config_from_dict(teacher_config(kitchen, tmp_path / "run", teacher))
    source = open_rgbd(kitchen)
    train_indices, _ = cfg.data.split.indices(source.stamps)
    dataset = objectives.SupervisedObjective(cfg, source, train_indices).dataset
    estimator = DepthEstimator.from_checkpoint(teacher, device="cpu")
    for i, index in enumerate(train_indices):
        frame = source[index]
        expected = estimator.infer(frame.rgb, fx=frame.camera.fx)
        labelled = dataset.source[index]
        assert labelled.depth.dtype == np.float32 and np.array_equal(labelled.rgb, frame.rgb)
        np.testing.assert_allclose(labelled.depth, expected, rtol=1e-3)  # cached as float16
        # ... and it is cropped and flipped with the image as sensor depth would be
        sample = dataset[i]
        reference = dataset.transform(dataclasses.replace(frame, depth=expected),
                                      np.random.default_rng([cfg.run.seed, 0, i]))
        torch.testing.assert_close(sample["image"], reference["image"])
        torch.testing.assert_close(sample["depth"], reference["depth"], rtol=1e-3, atol=0)
        assert torch.isfinite(sample["depth"]).all()  # dense, where the sensor's has holes

    summary = engine.train(cfg)  # the maps are cached in this run's folder already
    assert summary["finished"] and summary["step"] == 3 and (tmp_path / "run" / "best.pth").is_file()
    assert {"baseline_gt_median", "before", "best"} <= set(summary)  # validation on the sensor's depth
    assert summary["teacher"] | {"seconds": 0} == {
        "checkpoint": str(teacher), "mode": "replace", "architecture": "depth_anything_v2", "encoder": "vits",
        "max_depth": 6.0, "input_size": 42, "precision": "fp32", "computed_frames": 0, "cached_frames": 6,
        "cache": summary["teacher"]["cache"], "seconds": 0}
    assert len(list(Path(summary["teacher"]["cache"]).glob("*.npy"))) == 6
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["teacher"] == {"checkpoint": str(teacher), "mode": "replace", "input_size": None, "device": "cpu",
                                "precision": "fp32"}


def test_distillation_fill_keeps_valid_sensor_pixels_and_each_teacher_has_its_own_cache(kitchen, tmp_path,
                                                                                        monkeypatch):
    from depth_ros.learning import distill
    from depth_ros.metrics import valid_depth_mask

    def teacher_weights(seed: int) -> Path:
        return random_checkpoint(tmp_path / "teacher.pth", input_size=42, max_depth=6.0, train_focal_px=60.0,
                                 seed=seed)

    cfg = training_config.config_from_dict(teacher_config(kitchen, tmp_path / "run", teacher_weights(0),
                                                          mode="fill"))
    source = open_rgbd(kitchen)
    labels, summary = distill.teacher_labels(cfg, source, [0, 1])
    assert summary["computed_frames"] == 2 and summary["mode"] == "fill"
    for index in (0, 1):
        sensor = source[index].depth
        valid = valid_depth_mask(sensor, cfg.data.min_depth, cfg.max_depth)
        assert valid.any() and (~valid).any()
        depth = labels[index].depth
        np.testing.assert_array_equal(depth[valid], sensor[valid])
        np.testing.assert_array_equal(depth[~valid], labels.teacher_depth(index)[~valid])
        assert np.isfinite(depth).all()
    np.testing.assert_array_equal(labels[70].depth, source[70].depth)  # not a training frame: the sensor's

    def no_inference(*args, **kwargs):
        raise AssertionError("cached teacher depth must not be recomputed")

    monkeypatch.setattr(DepthEstimator, "infer", no_inference)
    again, summary = distill.teacher_labels(cfg, source, [0, 1])
    assert again.folder == labels.folder and summary["cached_frames"] == 2 and summary["computed_frames"] == 0
    monkeypatch.undo()
    teacher_weights(seed=1)  # retrained at the same path: its maps are new
    other_labels, summary = distill.teacher_labels(cfg, source, [0])
    assert other_labels.folder != labels.folder and summary["computed_frames"] == 1
    assert not np.allclose(other_labels.teacher_depth(0), labels.teacher_depth(0))


def test_a_bad_teacher_is_one_line_before_training_starts(kitchen, tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(teacher_config(kitchen, tmp_path / "run", missing)))
    assert trainer_main(["--config", str(config)], "silog", "train_supervised") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"train_supervised: error: teacher.checkpoint: {missing}: no such checkpoint file"), lines
    assert not (tmp_path / "run" / "states").exists() and not (tmp_path / "run" / "log.csv").exists()

    relative = random_checkpoint(tmp_path / "relative.pth", input_size=42, head="relative")
    with pytest.raises(training_config.ConfigError, match="relative.pth is a relative-depth model; distillation"):
        train(teacher_config(kitchen, tmp_path / "relative", relative))
    for values, message in [({"mode": "blend"}, "teacher.mode: 'blend' is not one of replace, fill"),
                            ({"precision": "fp8"}, "teacher.precision: 'fp8' is not one of fp32, fp16, bf16"),
                            ({"chekpoint": "x"}, "config.teacher: unknown key 'chekpoint'")]:
        with pytest.raises(training_config.ConfigError, match=message):
            training_config.config_from_dict(teacher_config(kitchen, tmp_path, missing, **values))
    no_depth = teacher_config(kitchen, tmp_path, missing, mode="fill")
    no_depth["data"]["depth_topic"] = None
    with pytest.raises(training_config.ConfigError, match="teacher.mode: fill mixes sensor and teacher depth"):
        training_config.config_from_dict(no_depth)
    no_depth["teacher"]["mode"] = "replace"  # images without depth distil fine
    assert training_config.config_from_dict(no_depth).teacher.mode == "replace"
    with pytest.raises(ValueError, match="teacher: pseudo-labels are for the supervised trainer"):
        engine.train(training_config.config_from_dict(teacher_config(kitchen, tmp_path / "ss", missing) | {
            "self_supervised": {"poses": {"kind": "tum", "topic": None}}}), objective="photometric")
