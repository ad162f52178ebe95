"""Per-pixel uncertainty (issue 18): the sigma head of both architectures, its checkpoint flag, training it, the
sparsification metrics and sigma gating of the pipeline."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from depth_ros.checkpoints import (
    BUNDLED_MODEL,
    BUNDLED_MODELS,
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from depth_ros.estimator import DepthEstimator
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import FREE, OCCUPIED, UNKNOWN, GridSpec
from depth_ros.geometry.transform import pose_matrix
from depth_ros.learning import engine
from depth_ros.learning.config import ConfigError, TrainConfig, config_from_dict
from depth_ros.learning.objectives import supervised_loss
from depth_ros.learning.trainable import build_optimizer, build_training_model, prepare_trainable
from depth_ros.models import create_model
from depth_ros.pipeline import CloudOptions, DepthPipeline, GridOptions
from depth_ros.published_depth import depth_factor, network_fx
from depth_ros.ros.params import DEFAULT_CAMERA_TO_BASE
from depth_ros.sparsification import (
    SPARSIFICATION_METRICS,
    UncertaintyEvaluation,
    frame_curves,
    gating_metrics,
    summarize,
)
from depth_ros.testing import random_checkpoint

RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
MODELS = {"packnet": ("tiny", 64), "depth_anything_v2": ("vits", 42)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def sigma_checkpoint(request, tmp_path_factory):
    encoder, size = MODELS[request.param]
    return random_checkpoint(tmp_path_factory.mktemp("sigma") / f"{request.param}.safetensors", encoder, size,
                             architecture=request.param, uncertainty=True, train_focal_px=50.0, max_depth=5.0)


def test_sigma_head_gives_positive_sigma_at_the_image_size_scaled_like_depth(sigma_checkpoint):
    estimator = DepthEstimator.from_checkpoint(sigma_checkpoint, device="cpu")
    assert estimator.metadata.uncertainty and estimator.has_uncertainty
    depth, sigma = estimator.infer_with_sigma(RGB)
    assert sigma.shape == depth.shape == RGB.shape[:2] and sigma.dtype == np.float32
    assert np.isfinite(sigma).all() and (sigma > 0).all()
    np.testing.assert_array_equal(depth, estimator.infer(RGB))  # the depth output does not change
    # a new head predicts INITIAL_SIGMA = 0.1 m of network output; the focal factor scales sigma as depth
    np.testing.assert_allclose(sigma, 0.1, rtol=1e-5)
    raw_width = estimator.network_size(*RGB.shape[:2])[1]
    factor = depth_factor(estimator.metadata, network_fx(80.0, RGB.shape[1], raw_width))
    depth_fx, sigma_fx = estimator.infer_with_sigma(RGB, fx=80.0)
    np.testing.assert_allclose(sigma_fx, 0.1 * factor, rtol=1e-5)
    np.testing.assert_allclose(depth_fx, depth * factor, rtol=1e-5)


def test_model_without_sigma_head_refuses_sigma_with_a_clear_error(checkpoint):
    estimator = DepthEstimator.from_checkpoint(checkpoint, device="cpu")
    assert not estimator.has_uncertainty
    with pytest.raises(ValueError, match="no sigma head"):
        estimator.infer_with_sigma(RGB)


def test_old_checkpoint_without_the_field_loads_without_sigma_and_strictly(tmp_path):
    metadata = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet")
    state = {k: v.contiguous() for k, v in create_model(metadata).state_dict().items()}
    old_fields = {k: v for k, v in vars(metadata).items() if k != "uncertainty"}  # a file from before the field
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(old_fields)})
    model, loaded = build_model(path)
    assert loaded.uncertainty is False and model.sigma_head is None
    assert set(model.state_dict()) == set(state)
    # the sigma head's weights under metadata that says "no sigma head" are unexpected keys: strict loading refuses
    with_head = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet", uncertainty=True)
    extra = {**state, **{k: v for k, v in create_model(with_head).state_dict().items() if k.startswith("sigma_head")}}
    save_file(extra, str(tmp_path / "mixed.safetensors"), metadata={METADATA_KEY: json.dumps(old_fields)})
    with pytest.raises(CheckpointError, match="unexpected.*sigma_head"):
        build_model(tmp_path / "mixed.safetensors")


# sha256 over the names and bytes of the bundled model's depth weights (every tensor but sigma_head.*), as shipped
# before the sigma head was added: adding it must not change a single depth weight
BUNDLED_DEPTH_DIGEST = "d6430f23c5c7ba3e39895321115cd6be678aee3a70123fcbdfcfcb016d61b948"


def test_bundled_model_has_a_sigma_head_and_its_depth_is_unchanged():
    import hashlib

    state, metadata = load_checkpoint(BUNDLED_MODELS[BUNDLED_MODEL])
    depth_state = {k: v for k, v in state.items() if not k.startswith("sigma_head.")}
    digest = hashlib.sha256()
    for name in sorted(depth_state):
        digest.update(name.encode())
        digest.update(depth_state[name].contiguous().numpy().tobytes())
    assert metadata.uncertainty and digest.hexdigest() == BUNDLED_DEPTH_DIGEST
    estimator = DepthEstimator.from_checkpoint(BUNDLED_MODEL, device="cpu")
    plain = replace(metadata, uncertainty=False)
    without_head = create_model(plain)
    without_head.load_state_dict(depth_state, strict=True)
    image = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth, sigma = estimator.infer_with_sigma(image, fx=585.0)
    np.testing.assert_array_equal(depth, DepthEstimator(without_head, plain, device="cpu").infer(image, fx=585.0))
    np.testing.assert_array_equal(depth, estimator.infer(image, fx=585.0))
    assert np.isfinite(sigma).all() and (sigma > 0).all() and 0.02 < np.median(sigma / depth) < 0.5


def test_uncertainty_needs_a_metric_head():
    with pytest.raises(ValueError, match="metric head"):
        CheckpointMetadata("vits", "relative", 1.0, uncertainty=True)


def test_checkpoint_round_trip_keeps_the_flag(tmp_path):
    metadata = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet", uncertainty=True)
    path = save_checkpoint(tmp_path / "s.safetensors", create_model(metadata), metadata)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[METADATA_KEY])["uncertainty"] is True
    assert build_model(path)[1] == metadata


# ---------------------------------------------------------------------------------------------------------------
# Training the sigma head


def _sigma_config(checkpoint, out, data="unused", **optim) -> TrainConfig:
    return config_from_dict({
        "model": {"architecture": "packnet", "encoder": "tiny", "max_depth": 5.0, "init": "checkpoint",
                  "checkpoint": str(checkpoint), "uncertainty": True},
        "data": {"path": str(data), "depth_scale": 1000, "input_size": 64, "min_depth": 0.1,
                 "split": {"train_frames": "0:6", "val_frames": "70:72"}},
        "optim": {"trainable": "uncertainty", "epochs": 2, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0,
                  **optim},
        "run": {"output_dir": str(out), "val_every_epochs": 1},
    })


def test_frozen_backbone_training_lowers_the_nll_and_changes_only_the_sigma_head(tmp_path):
    source = random_checkpoint(tmp_path / "plain.safetensors", "tiny", 64, architecture="packnet", max_depth=5.0)
    cfg = _sigma_config(source, tmp_path / "run")
    torch.manual_seed(0)
    model = build_training_model(cfg.model)
    plain, _ = build_model(source)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())  # depth weights loaded strictly
    model, groups = prepare_trainable(model, cfg.optim)
    optimizer = build_optimizer(groups, cfg.optim)
    image = torch.rand(2, 3, 64, 64) * 0.5
    image[..., 32:] += 0.5  # a brighter right half, where
    with torch.no_grad():
        predicted = plain.eval()(image)
    # the labels are off by 30 % (2 % on the left): sigma has something to see and learn
    error = torch.where(torch.arange(64) < 32, 0.02, 0.3).expand(2, 64, 64)
    batch = {"image": image, "depth": predicted * (1 + error)}
    model.train()
    nlls = []
    for _ in range(30):
        loss, stats = supervised_loss(model, batch, cfg)
        loss.backward()
        assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("sigma_head."))
        optimizer.step()
        optimizer.zero_grad()
        nlls.append(stats["nll"])
    assert nlls[-1] < nlls[0] - 0.5
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("sigma_head.") for k in changed)
    with torch.no_grad():
        depth, log_sigma = model.eval()(image, with_sigma=True)
    torch.testing.assert_close(depth, predicted, rtol=0, atol=0)  # depth untouched
    sigma = log_sigma.exp()
    assert sigma[..., 32:].mean() > 3 * sigma[..., :32].mean()  # more sigma where the error is larger


def test_sigma_training_needs_a_sigma_head(tmp_path):
    with pytest.raises(ConfigError, match="model.uncertainty"):
        config_from_dict({"model": {"architecture": "packnet", "encoder": "tiny"}, "data": {"path": "x",
                          "input_size": 64}, "optim": {"trainable": "uncertainty"}, "run": {"output_dir": "x"}})
    with pytest.raises(ConfigError, match="uncertainty_loss"):
        config_from_dict({"model": {"uncertainty": True, "uncertainty_loss": "cauchy"}, "data": {"path": "x"},
                          "run": {"output_dir": "x"}})


def test_a_run_on_real_frames_saves_a_checkpoint_with_the_trained_sigma_head(shared_data, tmp_path):
    source = random_checkpoint(tmp_path / "plain.safetensors", "tiny", 64, architecture="packnet", max_depth=5.0)
    cfg = _sigma_config(source, tmp_path / "run", shared_data / "7scenes_redkitchen")
    summary = engine.train(cfg)
    best = tmp_path / "run" / "best.pth"
    model, metadata = build_model(best)
    assert metadata.uncertainty and summary["best"]["step"] == summary["step"]  # ties go to the newest weights
    plain, _ = build_model(source)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())
    fresh = create_model(metadata).state_dict()
    assert not torch.equal(state["sigma_head.2.bias"], fresh["sigma_head.2.bias"])


# ---------------------------------------------------------------------------------------------------------------
# Pipeline: sigma at the output size, gating of points and grid


def varied_sigma_checkpoint(path, **metadata_overrides):
    """A random PackNet whose sigma head varies across the image (a new head predicts 0.1 m everywhere)."""
    metadata = CheckpointMetadata(**{"encoder": "tiny", "head": "metric", "max_depth": 5.0, "input_size": 64,
                                     "train_focal_px": 585.0 * 96 / 640, "architecture": "packnet",
                                     "uncertainty": True, **metadata_overrides})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(metadata)
        torch.nn.init.normal_(model.sigma_head[2].weight, std=0.5)
    return save_checkpoint(path, model, metadata)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    return DepthEstimator.from_checkpoint(varied_sigma_checkpoint(tmp_path_factory.mktemp("v") / "v.safetensors"),
                                          device="cpu")


CAMERA = PinholeCamera(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480).resized(128, 96)
RGB96 = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def test_pipeline_computes_sigma_only_when_asked_or_gating(varied):
    pipeline = DepthPipeline(varied, min_depth=0.1, max_depth=5.0, output_scale=0.5)
    assert pipeline.run(RGB96, CAMERA).uncertainty is None
    out = pipeline.run(RGB96, CAMERA, want_uncertainty=True)
    assert out.uncertainty.shape == out.depth.shape == (48, 64)
    np.testing.assert_array_equal(np.isnan(out.uncertainty), np.isnan(out.depth))
    depth, sigma = varied.infer_with_sigma(RGB96, fx=CAMERA.fx)  # same conversion, at the input size
    assert np.nanmedian(out.uncertainty) == pytest.approx(np.median(sigma), rel=0.05)
    assert np.nanstd(out.uncertainty) > 0.1 * np.nanmean(out.uncertainty)  # a varied head
    gated = DepthPipeline(varied, min_depth=0.1, max_depth=5.0, max_relative_sigma=0.05)
    assert gated.gating and gated.run(RGB96, CAMERA).uncertainty is not None


def test_gating_drops_exactly_the_uncertain_pixels_from_points(varied):
    full = DepthPipeline(varied, min_depth=0.1, max_depth=5.0).run(RGB96, CAMERA, want_uncertainty=True)
    relative = full.uncertainty / full.depth
    threshold = float(np.nanmedian(relative))
    out = DepthPipeline(varied, min_depth=0.1, max_depth=5.0, max_relative_sigma=threshold).run(RGB96, CAMERA)
    np.testing.assert_array_equal(out.depth, full.depth)  # depth itself is published ungated
    kept = np.isfinite(out.cloud["z"])
    np.testing.assert_array_equal(kept, relative <= threshold)
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(out.cloud["z"][kept], full.depth[kept], rtol=1e-6)


def test_nan_sigma_drops_the_pixel_and_a_dense_cloud_has_no_nan(varied, monkeypatch):
    forward = varied.forward

    def nan_sigma(batch, with_sigma=False):
        if not with_sigma:
            return forward(batch)
        depth, sigma = forward(batch, with_sigma)
        sigma = sigma.clone()
        sigma[..., : sigma.shape[-1] // 2] = float("nan")  # left half of the network's sigma
        return depth, sigma

    monkeypatch.setattr(varied, "forward", nan_sigma)
    pipeline = DepthPipeline(varied, min_depth=0.1, max_depth=5.0, max_relative_sigma=10.0,
                             cloud=CloudOptions(organised=False))
    out = pipeline.run(RGB96, CAMERA)
    assert np.isnan(out.uncertainty[:, :60]).all() and np.isfinite(out.uncertainty[:, 68:]).all()
    xyz = np.stack([out.cloud[a] for a in "xyz"], axis=-1)
    assert len(xyz) > 0 and np.isfinite(xyz).all()
    expected = DepthPipeline(varied, min_depth=0.1, max_depth=5.0).points(
        np.where(np.isfinite(out.uncertainty), out.depth, np.nan), out.camera)
    assert len(xyz) == np.isfinite(expected[..., 2]).sum()


def test_grid_cells_seen_only_through_uncertain_pixels_stay_unknown(varied, monkeypatch):
    """A wall 2 m ahead whose left image half is uncertain: its cells and the free space before it stay unknown."""
    camera = PinholeCamera(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)
    spec = GridSpec(resolution=0.05, width=200, height=200, origin_x=0.0, origin_y=-5.0)
    pipeline = DepthPipeline(varied, min_depth=0.1, max_depth=5.0, grid=GridOptions(spec), max_relative_sigma=0.1)
    wall = np.full((480, 640), 2.025, np.float32)
    sigma = np.where(np.arange(640) < 320, 1.0, 0.01).astype(np.float32) * np.ones((480, 1), np.float32)
    monkeypatch.setattr(pipeline, "postprocess", lambda raw, size, cam: (wall, wall, cam))
    monkeypatch.setattr(pipeline, "postprocess_sigma", lambda raw, depth, cam: sigma)
    out = pipeline.run(np.zeros((480, 640, 3), np.uint8), camera, pose_matrix(DEFAULT_CAMERA_TO_BASE))
    ungated = pipeline.grid(pipeline.points(wall, camera), pose_matrix(DEFAULT_CAMERA_TO_BASE))
    # optical x right = grid -y: the uncertain left image half is the wall's cells at y > 0 (rows > 100)
    # (1 m ahead, column 20, the field of view spans rows 89..110)
    assert (ungated[101:123, 40] == OCCUPIED).all() and (ungated[101:110, 20] == FREE).all()
    assert (out.grid[101:123, 40] == UNKNOWN).all() and (out.grid[101:110, 20] == UNKNOWN).all()
    assert (out.grid[78:99, 40] == OCCUPIED).all() and (out.grid[90:99, 20] == FREE).all()


# ---------------------------------------------------------------------------------------------------------------
# Sparsification metrics


def _synthetic_frame(seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 4.0, (60, 80))
    pred = gt * (1 + rng.normal(0, 0.1, gt.shape))
    valid = rng.random(gt.shape) > 0.1
    return pred, gt, valid


def test_sigma_equal_to_the_true_error_has_zero_ause_and_random_sigma_the_random_baseline():
    frames = [_synthetic_frame(seed) for seed in range(3)]
    rng = np.random.default_rng(0)
    for sigma_of, metric in ((lambda p, g: np.abs(p - g) / g, "abs_rel"), (lambda p, g: np.abs(p - g), "rmse")):
        perfect = summarize([frame_curves(p, g, sigma_of(p, g), v, rng) for p, g, v in frames])[metric]
        assert perfect["ause"] == pytest.approx(0.0, abs=1e-12)
        assert perfect["aurg"] == pytest.approx(perfect["ause_random"], rel=1e-9)
        assert perfect["ause_random"] > 0.01 and perfect["ause_depth"] > 0.01
    noise = summarize([frame_curves(p, g, rng.random(g.shape), v, rng) for p, g, v in frames])
    for metric in SPARSIFICATION_METRICS:
        assert noise[metric]["ause"] == pytest.approx(noise[metric]["ause_random"], rel=0.1)
        assert abs(noise[metric]["aurg"]) < 0.1 * noise[metric]["ause_random"]
    # the first point of every curve is the metric of all valid pixels
    p, g, v = frames[0]
    curves = frame_curves(p, g, rng.random(g.shape), v, rng)
    assert curves["abs_rel"]["sigma"][0] == pytest.approx(np.mean(np.abs(p - g)[v] / g[v]))
    assert curves["rmse"]["oracle"][0] == pytest.approx(np.sqrt(np.mean((p - g)[v] ** 2)))


def test_depth_proportional_sigma_is_the_depth_baseline_and_nan_sigma_is_removed_first():
    p, g, v = _synthetic_frame()
    rng = np.random.default_rng(0)
    summary = summarize([frame_curves(p, g, 0.05 * p, v, rng)])
    assert summary["abs_rel"]["ause"] == pytest.approx(summary["abs_rel"]["ause_depth"])
    sigma = np.abs(p - g) / g
    worst = sigma >= np.quantile(sigma[v], 0.9)
    curves = frame_curves(p, g, np.where(worst, np.nan, sigma), v, rng)["abs_rel"]
    # NaN ranks as the most uncertain: once more than the worst 10 % are gone, sigma does as well as the oracle
    np.testing.assert_allclose(curves["sigma"][3:], curves["oracle"][3:])
    assert curves["sigma"][1] > curves["oracle"][1]


def test_gating_metrics_and_the_evaluation_summary():
    p, g, v = _synthetic_frame()
    sigma = np.abs(p - g)
    gated = gating_metrics(p, g, sigma, v, 0.05)
    keep = v & (sigma <= 0.05 * p)
    assert gated["kept"] == pytest.approx(keep.sum() / v.sum())
    assert gated["abs_rel_kept"] == pytest.approx(np.mean(np.abs(p - g)[keep] / g[keep]))
    assert gated["abs_rel_kept"] < 0.5 * gated["abs_rel_all"]
    evaluation = UncertaintyEvaluation([0.05])
    evaluation.add(p, g, sigma, v)
    result = evaluation.result()
    assert result["gating"] == [{"max_relative_sigma": 0.05, **gated}]
    assert result["relative_sigma_quantiles"]["p50"] == pytest.approx(np.median(sigma[v] / p[v]), rel=0.05)


def test_an_onnx_backend_runs_depth_only_and_says_so(tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    from depth_ros.backends import export_onnx

    path = varied_sigma_checkpoint(tmp_path / "sigma.safetensors")
    reference = DepthEstimator.from_checkpoint(path, device="cpu")
    torch_depth = reference.infer(RGB)
    export_onnx(reference.model, reference.metadata, tmp_path / "sigma.onnx", None)
    with caplog.at_level("INFO", logger="depth_ros.estimator"):
        estimator = DepthEstimator.from_checkpoint(path, device="cpu", backend="onnxruntime",
                                                   backend_model=tmp_path / "sigma.onnx")
    assert estimator.backend is not None and not estimator.has_uncertainty
    assert "runs the depth output only" in caplog.text
    np.testing.assert_allclose(estimator.infer(RGB), torch_depth, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="run by this backend"):
        estimator.infer_with_sigma(RGB)
    pipeline = DepthPipeline(estimator, min_depth=0.1, max_depth=5.0, max_relative_sigma=0.1)
    assert not pipeline.gating and pipeline.run(RGB96, CAMERA, want_uncertainty=True).uncertainty is None
