"""Depth metrics, SiLog loss, crops and alignment against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from depth_ros.losses import silog_loss
from depth_ros.metrics import (
    METRIC_NAMES,
    align_prediction,
    crop_mask,
    depth_metrics,
    evaluate_depth,
    evaluate_frames,
    mean_metrics,
    median_baseline,
    scale_shift_inverse,
    valid_depth_mask,
)

# Ground truth 2 m everywhere; predictions off by -50 %, 0 %, +20 %, +80 %.
PRED = np.array([1.0, 2.0, 2.4, 3.6])
GT = np.array([2.0, 2.0, 2.0, 2.0])
# By hand: |p-g|/g = 0.5, 0, 0.2, 0.8; (p-g)^2/g = 0.5, 0, 0.08, 1.28; (p-g)^2 = 1, 0, 0.16, 2.56;
# ln(p/g) = -0.693147, 0, 0.182322, 0.587787; |log10(p/g)| = 0.301030, 0, 0.079181, 0.255273;
# max(p/g, g/p) = 2, 1, 1.2, 1.8 against 1.25, 1.5625, 1.953125.
EXPECTED = {
    "abs_rel": 1.5 / 4,
    "sq_rel": 1.86 / 4,
    "rmse": math.sqrt(3.72 / 4),
    "rmse_log": math.sqrt((0.693147**2 + 0.182322**2 + 0.587787**2) / 4),
    "log10": (0.301030 + 0.079181 + 0.255273) / 4,
    "delta1": 2 / 4,
    "delta2": 2 / 4,
    "delta3": 3 / 4,
    # d = ln g - ln p: mean(d^2) = 0.214797, mean(d) = -0.0192405 -> sqrt(0.214797 - 0.5 * 0.0192405^2)
    "silog": math.sqrt(0.214797 - 0.5 * 0.0192405**2),
    "median_ratio": (1.0 + 1.2) / 2,  # ratios 0.5, 1, 1.2, 1.8
}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_each_metric_matches_hand_computed_value(name):
    assert depth_metrics(PRED, GT)[name] == pytest.approx(EXPECTED[name], abs=2e-6)


def test_perfect_prediction_scores_perfectly():
    gt = np.array([0.5, 1.0, 3.0, 7.5])
    metrics = depth_metrics(gt.copy(), gt)
    assert metrics["abs_rel"] == metrics["rmse"] == metrics["silog"] == 0
    assert metrics["delta1"] == 1


def test_depth_metrics_rejects_empty_and_mismatched_input():
    with pytest.raises(ValueError, match="no valid pixels"):
        depth_metrics(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="1-D"):
        depth_metrics(PRED, GT[:3])


def test_silog_loss_matches_hand_value_and_ignores_invalid_pixels():
    pred = torch.tensor([[1.0, 2.0, 2.4, 3.6, 5.0]], requires_grad=True)
    target = torch.tensor([[2.0, 2.0, 2.0, 2.0, float("nan")]])
    valid = torch.isfinite(target)
    loss = silog_loss(pred, target, valid)
    assert loss.item() == pytest.approx(EXPECTED["silog"], abs=2e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 4] == 0
    # lambda 0 is the RMSE of log depth; lambda 1 is blind to a global scale factor
    assert float(silog_loss(pred.detach(), target, valid, lam=0.0)) == pytest.approx(EXPECTED["rmse_log"], abs=2e-6)
    scaled = silog_loss(pred.detach() * 3.0, target, valid, lam=1.0)
    assert float(scaled) == pytest.approx(float(silog_loss(pred.detach(), target, valid, lam=1.0)), abs=1e-6)


def test_silog_loss_is_nan_without_valid_pixels_and_checks_shapes():
    pred = torch.ones(2, 3)
    assert torch.isnan(silog_loss(pred, pred, torch.zeros(2, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="shapes differ"):
        silog_loss(pred, torch.ones(3, 2), torch.ones(2, 3, dtype=torch.bool))


def test_valid_mask_excludes_nan_inf_and_out_of_range_for_numpy_and_torch():
    gt = np.array([np.nan, np.inf, -np.inf, 0.0, 0.05, 0.1, 5.0, 10.0, 10.5], dtype=np.float32)
    expected = [False, False, False, False, False, True, True, True, False]
    assert valid_depth_mask(gt, 0.1, 10.0).tolist() == expected
    assert valid_depth_mask(torch.from_numpy(gt), 0.1, 10.0).tolist() == expected


def test_crops_select_the_documented_boxes():
    nyu = crop_mask(480, 640, "nyu")
    rows, cols = np.flatnonzero(nyu.any(axis=1)), np.flatnonzero(nyu.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (45, 470, 41, 600)
    assert nyu.sum() == 426 * 560
    garg = crop_mask(375, 1242, "garg")
    rows, cols = np.flatnonzero(garg.any(axis=1)), np.flatnonzero(garg.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
    assert crop_mask(4, 5, None).all()
    with pytest.raises(ValueError, match="unknown evaluation crop"):
        crop_mask(4, 5, "kitti")


@pytest.fixture
def scene():
    """A 20x30 ground truth from 1 to 6 m with some invalid pixels."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 6.0, (20, 30)).astype(np.float64)
    gt[0, :5] = np.nan
    gt[1, :5] = 0.0
    return gt


def test_median_alignment_recovers_a_global_scale(scene):
    mask = valid_depth_mask(scene, 0.1, 10)
    aligned = align_prediction(scene * 0.37, scene, mask, "median", max_depth=10)
    np.testing.assert_allclose(aligned[mask], scene[mask], rtol=1e-12)


def test_scale_shift_alignment_recovers_scale_and_shift_in_inverse_depth(scene):
    mask = valid_depth_mask(scene, 0.1, 10)
    # a relative model's output x with 1/gt = 2.5 x + 0.05 (inf where the ground truth is 0: outside the mask)
    with np.errstate(divide="ignore"):
        disparity = (1.0 / scene - 0.05) / 2.5
        wrong = 1.0 / (0.5 / scene + 0.1)
    s, t = scale_shift_inverse(disparity[mask], scene[mask])
    assert (s, t) == (pytest.approx(2.5, rel=1e-9), pytest.approx(0.05, abs=1e-10))
    aligned = align_prediction(disparity, scene, mask, "scale_shift", max_depth=10, pred_is_disparity=True)
    np.testing.assert_allclose(aligned[mask], scene[mask], rtol=1e-9)
    # a metric prediction with wrong scale and shift in inverse depth is recovered too
    np.testing.assert_allclose(align_prediction(wrong, scene, mask, "scale_shift", 10)[mask], scene[mask], rtol=1e-9)


def test_scale_shift_caps_depth_at_max_depth():
    gt = np.array([1.0, 2.0, 4.0])
    disparity = np.array([3.0, 1.0, 0.0])  # fit leaves the far pixel's inverse depth near 0
    aligned = align_prediction(disparity, gt, np.ones(3, bool), "scale_shift", max_depth=8.0, pred_is_disparity=True)
    assert aligned.max() <= 8.0 + 1e-9


def test_alignment_errors():
    gt = np.ones((2, 2))
    mask = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="scale_shift"):
        align_prediction(gt, gt, mask, "median", 10, pred_is_disparity=True)
    with pytest.raises(ValueError, match="unknown alignment"):
        align_prediction(gt, gt, mask, "affine", 10)
    with pytest.raises(ValueError, match="degenerate"):
        align_prediction(gt, gt, mask, "scale_shift", 10)


def test_evaluate_depth_masks_invalid_ground_truth_and_caps_predictions(scene):
    pred = scene.copy()
    pred[2, 0] = 100.0  # capped to max_depth 10
    pred[0, :5] = 50.0  # ground truth invalid there: ignored
    metrics = evaluate_depth(pred, scene, min_depth=0.1, max_depth=10.0)
    n_valid = scene.size - 10
    assert metrics["abs_rel"] == pytest.approx(abs(10.0 - scene[2, 0]) / scene[2, 0] / n_valid)
    with pytest.raises(ValueError, match="no valid ground-truth"):
        evaluate_depth(pred, scene, min_depth=20.0, max_depth=30.0)
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_depth(pred[:5], scene, min_depth=0.1, max_depth=10.0)


def test_median_baseline_and_means_over_frames(scene):
    baseline = median_baseline(scene, 0.1, 10.0)
    assert baseline.shape == scene.shape and baseline.dtype == np.float32
    np.testing.assert_allclose(baseline, np.median(scene[valid_depth_mask(scene, 0.1, 10)]), rtol=1e-7)
    frames = [type("Frame", (), {"depth": scene})(), type("Frame", (), {"depth": scene})()]
    scale = iter([1.0, 1.1])
    results = list(evaluate_frames(lambda f: f.depth * next(scale), frames, min_depth=0.1, max_depth=10.0))
    summary = mean_metrics([m for _, _, m in results])
    assert summary["n_frames"] == 2
    assert summary["abs_rel"] == pytest.approx(0.05)  # frames score 0 and 0.1
    with pytest.raises(ValueError, match="no frames"):
        mean_metrics([])
