"""DepthEstimator: preprocessing sizes, precision, focal correction, batching, transformers models, infer CLI."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_ros.checkpoints import (
    HYPERSIM_FOCAL,
    VKITTI_FOCAL,
    CheckpointMetadata,
    network_focal,
    network_size,
    save_checkpoint,
)
from depth_ros.estimator import DepthEstimator
from depth_ros.models import DepthAnythingV2
from depth_ros.models.registry import IMAGENET_MEAN, IMAGENET_STD
from depth_ros.testing import large_png, random_checkpoint
from depth_ros.tools.infer import main as infer_main

SMALL_INPUT = 70


@pytest.fixture(scope="module")
def metric_checkpoint(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "metric_vits.pth", input_size=SMALL_INPUT,
                             train_focal_px=150.0)


@pytest.fixture(scope="module")
def estimator(metric_checkpoint) -> DepthEstimator:
    return DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=SMALL_INPUT)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width", "expected"), [
    (480, 640, (518, 686)),  # 640 * 518/480 = 690.7 -> 686 (nearest multiple of 14)
    (375, 1242, (518, 1722)),  # 1242 * 518/375 = 1715.6 -> 1722
    (518, 518, (518, 518)),
    (700, 500, (728, 518)),  # 700 * 518/500 = 725.2 -> 728
    (20, 15, (686, 518)),  # upscaled: 20 * 518/15 = 690.7 -> 686
])
def test_network_size_matches_reference_resize(height, width, expected):
    assert network_size(height, width, 518) == expected


def test_network_size_rounds_up_when_nearest_multiple_is_below_input_size():
    # 100 x 133: short side 100 -> 140 exactly; long side 133 * 1.4 = 186.2 -> 182 (>= 140, kept)
    assert network_size(100, 133, 140) == (140, 182)
    # 141 x 140 at input 140: scale 1, 141 -> round(10.07)*14 = 140, 140 -> 140
    assert network_size(141, 140, 140) == (140, 140)


@pytest.mark.parametrize("shape", [(1, 1), (13, 640), (480, 5)])
def test_images_smaller_than_a_patch_are_rejected(estimator, shape):
    with pytest.raises(ValueError, match="too small"):
        estimator.infer(np.zeros((*shape, 3), np.uint8))


@pytest.mark.parametrize("bad", [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.float32),
                                 np.zeros((32, 32, 4), np.uint8)])
def test_non_rgb_uint8_arrays_are_rejected(estimator, bad):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        estimator.infer(bad)


def test_input_size_must_be_multiple_of_14(metric_checkpoint):
    with pytest.raises(ValueError, match="multiple of 14"):
        DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=500)


def test_preprocess_equals_reference_float64_pipeline(estimator, rgb):
    """Reference: RGB/255 in float64, cv2 bicubic resize, ImageNet normalisation, float32 CHW.

    We resize in float32 (3x faster); that moves normalised values by at most ~1e-5 (a 1/300 of a grey level).
    """
    height, width = network_size(*rgb.shape[:2], SMALL_INPUT)
    image = cv2.resize(rgb / 255.0, (width, height), interpolation=cv2.INTER_CUBIC)
    image = ((image - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1).astype(np.float32)
    ours = estimator.preprocess(rgb)
    assert ours.shape == (1, 3, height, width) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours[0].numpy(), image, atol=3e-5)


def test_output_is_float32_at_input_resolution_and_within_metric_range(estimator, rgb):
    depth = estimator.infer(rgb)
    assert depth.shape == rgb.shape[:2] and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0 and depth.max() <= 20.0


def test_output_upsampling_is_bilinear_align_corners(estimator, rgb):
    raw = estimator.forward(estimator.preprocess(rgb))
    expected = torch.nn.functional.interpolate(raw[:, None], rgb.shape[:2], mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(estimator.postprocess(raw, rgb.shape[:2]), expected[0, 0].numpy())
    # corners of the output are exactly the corners of the network output (align_corners=True)
    assert estimator.postprocess(raw, rgb.shape[:2])[0, 0] == raw[0, 0, 0].item()


def test_bf16_agrees_with_fp32(metric_checkpoint, rgb):
    """bf16 autocast keeps ~3 significant digits: median relative difference below 1 %, worst pixel below 5 %."""
    fp32 = DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=SMALL_INPUT).infer(rgb)
    bf16 = DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=SMALL_INPUT,
                                          precision="bf16").infer(rgb)
    relative = np.abs(bf16 - fp32) / fp32
    assert np.median(relative) < 0.01 and relative.max() < 0.05
    assert not np.array_equal(bf16, fp32)  # autocast really ran in bf16


def test_focal_correction_scales_exactly_by_focal_ratio(estimator, metric_checkpoint, rgb):
    fx = 60.0
    plain = estimator.infer(rgb)
    corrected = estimator.infer(rgb, fx=fx)
    net_width = network_size(*rgb.shape[:2], SMALL_INPUT)[1]
    expected_ratio = fx * net_width / rgb.shape[1] / 150.0
    np.testing.assert_allclose(corrected / plain, expected_ratio, rtol=1e-6)
    off = DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=SMALL_INPUT,
                                         focal_correction=False)
    np.testing.assert_array_equal(off.infer(rgb, fx=fx), plain)


def test_focal_correction_rejects_non_finite_focal(estimator, rgb):
    with pytest.raises(ValueError, match="focal"):
        estimator.infer(rgb, fx=float("nan"))


def test_relative_models_ignore_focal_length(tmp_path, rgb):
    path = save_checkpoint(tmp_path / "rel.pth", DepthAnythingV2("vits", "relative"),
                           CheckpointMetadata("vits", "relative", 1.0, SMALL_INPUT, None))
    estimator = DepthEstimator.from_checkpoint(path, device="cpu", input_size=SMALL_INPUT)
    assert not estimator.is_metric
    np.testing.assert_array_equal(estimator.infer(rgb, fx=30.0), estimator.infer(rgb))


def test_official_training_focals_at_network_input():
    # Hypersim 1024x768 -> 686x518 network input, Virtual KITTI 2 1242x375 -> 1722x518
    assert HYPERSIM_FOCAL == pytest.approx(886.81 * 686 / 1024)
    assert VKITTI_FOCAL == pytest.approx(725.0087 * 1722 / 1242)
    assert network_focal(585.0, 640, 480, 518) == pytest.approx(585.0 * 686 / 640)


def test_infer_batch_equals_single_inference(estimator, rgb):
    other = np.ascontiguousarray(rgb[::-1])
    small = np.ascontiguousarray(rgb[:30, :40])
    batch = estimator.infer_batch([rgb, small, other], fx=[None, None, 50.0])
    np.testing.assert_allclose(batch[0], estimator.infer(rgb), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch[1], estimator.infer(small), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch[2], estimator.infer(other, fx=50.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="focal lengths"):
        estimator.infer_batch([rgb, other], fx=[1.0])


def test_unknown_device_and_precision_are_rejected(metric_checkpoint):
    with pytest.raises(ValueError, match="precision"):
        DepthEstimator.from_checkpoint(metric_checkpoint, precision="int8")
    with pytest.raises(ValueError, match="device"):
        DepthEstimator.from_checkpoint(metric_checkpoint, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            DepthEstimator.from_checkpoint(metric_checkpoint, device="cuda:0")


def test_transformers_depth_model_behind_the_same_interface(tmp_path, rgb):
    transformers = pytest.importorskip("transformers")
    backbone = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=64, image_size=70, patch_size=14,
                                         out_features=["stage1", "stage2", "stage3", "stage4"],
                                         reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                              neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                              depth_estimation_type="metric", max_depth=20)
    torch.manual_seed(0)
    folder = tmp_path / "Tiny-Metric-Indoor-hf"
    transformers.DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    estimator = DepthEstimator.from_checkpoint(folder, device="cpu", input_size=SMALL_INPUT)
    assert estimator.is_metric and estimator.metadata.train_focal_px == pytest.approx(HYPERSIM_FOCAL)
    depth = estimator.infer(rgb)
    assert depth.shape == rgb.shape[:2] and depth.dtype == np.float32
    assert 0 < depth.min() and depth.max() < 20.0
    # the wrapper returns exactly what the transformers model predicts
    batch = estimator.preprocess(rgb)
    with torch.no_grad():
        expected = estimator.model.hf_model(pixel_values=batch).predicted_depth
    torch.testing.assert_close(estimator.forward(batch), expected)


def test_infer_cli_writes_depth_png_and_ply(tmp_path, metric_checkpoint, shared_data):
    image = shared_data / "tum_fr3_single" / "TUM_color.png"
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "depth_ros.tools.infer", str(image), "--checkpoint", str(metric_checkpoint),
         "--input-size", str(SMALL_INPUT), "--device", "cpu", "--fx", "535.4", "--fy", "539.2", "--cx", "320.1",
         "--cy", "247.6", "--ply", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    depth = np.load(out / "TUM_color_depth.npy")
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert cv2.imread(str(out / "TUM_color_depth.png")).shape == (480, 640, 3)
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(out / "TUM_color.ply"))
    assert len(cloud.points) == 480 * 640 and cloud.has_colors()
    # z of the cloud is the depth map (optical frame, row-major pixel order)
    np.testing.assert_allclose(np.asarray(cloud.points)[:, 2], depth.reshape(-1), rtol=1e-5)


def test_infer_cli_fails_with_one_readable_line(tmp_path):
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = subprocess.run([sys.executable, "-m", "depth_ros.tools.infer", str(image), "--checkpoint",
                             str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"infer: error: {tmp_path / 'missing.pth'}: no such checkpoint file")


@pytest.mark.parametrize("fx", ["-500", "nan", "0"])
def test_infer_cli_refuses_a_bad_focal_length_whatever_the_model(tmp_path, checkpoint, fx):
    """The session checkpoint records no training focal length (its output ignores fx): a bad --fx is still refused
    with one line and exit 2, and nothing is written."""
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    result = subprocess.run([sys.executable, "-m", "depth_ros.tools.infer", str(image), "--checkpoint", str(checkpoint),
                             "--device", "cpu", "--fx", fx, "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        f"infer: error: --fx must be a finite positive number of pixels, got {float(fx)}"
    assert not (tmp_path / "o").exists()


def test_infer_refuses_two_inputs_that_would_write_the_same_outputs(tmp_path, metric_checkpoint, rgb, capsys):
    for folder in ("same1", "same2"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "img.jpg"), rgb)
    out = tmp_path / "out"
    assert infer_main([str(tmp_path / "same1" / "img.jpg"), str(tmp_path / "same2"), "--checkpoint",
                       str(metric_checkpoint), "--device", "cpu", "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"infer: error: {tmp_path / 'same1' / 'img.jpg'} and {tmp_path / 'same2' / 'img.jpg'} would "
                     "both write img_depth.npy: rename one or run them with different --out folders")
    assert not out.exists()


def test_infer_skips_unreadable_images_finishes_the_rest_and_fails_with_the_count(tmp_path, metric_checkpoint, rgb,
                                                                                   capsys, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), rgb)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8broke")  # 7 bytes
    (folder / "huge.png").write_bytes(large_png())  # 10000 x 10000 px, over --max-pixels
    cv2.imwrite(str(folder / "z.jpg"), rgb)
    out = tmp_path / "out"
    assert infer_main([str(folder), "--checkpoint", str(metric_checkpoint), "--device", "cpu", "--out", str(out)]) == 1
    assert sorted(p.name for p in out.glob("*.npy")) == ["a_depth.npy", "z_depth.npy"]
    assert "is 10000x10000 = 100000000 px, more than the limit of 16777216 px" in caplog.text
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"infer: error: 2 of 4 images skipped (the others are in {out}): cannot decode "
                           f"{folder / 'broken.jpg'}, 7 bytes")
    assert last.endswith(f"; {folder / 'huge.png'} is 10000x10000 = 100000000 px, more than the limit of 16777216 px "
                         "(max_image_pixels)")


def test_input_size_defaults_to_the_checkpoints_training_size(metric_checkpoint, rgb):
    estimator = DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu")
    assert estimator.input_size == SMALL_INPUT  # recorded in the checkpoint's metadata
    assert DepthEstimator.from_checkpoint(metric_checkpoint, device="cpu", input_size=140).input_size == 140


def test_transformers_hub_id_offline_and_uncached_is_one_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    from depth_ros.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf: cannot load "
                                              "transformers depth model") as info:
        DepthEstimator.from_checkpoint("depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf", device="cpu")
    assert "\n" not in str(info.value)
