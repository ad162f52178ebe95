"""OnlineAdapter (depth_ros.learning.adaptation): keyframe gating, rejections, replay, guarded publishing and
rollback, on real 7-Scenes frames with their ground-truth camera poses."""

import math

import numpy as np
import pytest
import torch

from depth_ros.checkpoints import load_checkpoint
from depth_ros.data.tum import TumRGBD
from depth_ros.geometry.transform import PoseTrajectory, pose_matrix
from depth_ros.learning.adaptation import LATEST, AdaptationConfig, OnlineAdapter
from depth_ros.testing import random_checkpoint


@pytest.fixture(scope="module")
def drive(shared_data):
    """Frames 300..371 of the 30 Hz sequence (~30 cm of motion): (rgb, camera, T_world_camera, stamp) each."""
    folder = shared_data / "7scenes_redkitchen_odom" / "tum"
    sequence = TumRGBD(folder)
    trajectory = PoseTrajectory.from_tum_file(folder / "groundtruth.txt")
    frames = []
    for index in range(300, 372, 2):
        frame = sequence[index]
        frames.append((frame.rgb, frame.camera, trajectory.at(frame.stamp), frame.stamp))
    return frames


@pytest.fixture()
def adapter(tmp_path):
    start = random_checkpoint(tmp_path / "start.pth", input_size=42, max_depth=10.0)
    config = AdaptationConfig(min_translation=0.02, batch_size=2, holdout_every=3, min_updates_between_checks=2)
    return OnlineAdapter(start, tmp_path / "out", config)


def test_a_stationary_camera_makes_no_sample_and_no_update(adapter, drive):
    rgb, camera, pose, stamp = drive[0]
    outcomes = [adapter.offer(rgb, camera, pose, stamp + 0.1 * i) for i in range(20)]
    assert outcomes[0] == "keyframe" and set(outcomes[1:]) == {"not moved"}
    assert not adapter.ready() and adapter.update() is None and adapter.samples_seen == 0


def test_bad_frames_are_rejected_and_counted(adapter, drive):
    rgb, camera, pose, stamp = drive[0]
    assert adapter.offer(rgb, camera, pose, stamp) == "keyframe"
    jumped = pose_matrix([1.0, 0, 0, 0, 0, 0]) @ pose  # 1 m in 33 ms: 30 m/s
    assert adapter.offer(drive[1][0], camera, jumped, stamp + 1 / 30) == "rejected: pose jump"
    assert adapter.offer(drive[2][0], camera.resized(320, 240), drive[2][2], drive[2][3]) \
        == "rejected: camera_info mismatch"
    assert adapter.offer(np.zeros_like(rgb), camera, drive[3][2], drive[3][3]) \
        == "rejected: dark or texture-less image"
    assert adapter.offer(rgb, camera, drive[4][2], drive[4][3]) == "rejected: image frozen while moving"
    assert adapter.offer(drive[5][0], camera, drive[0][2], stamp - 0.5) == "rejected: stamp not increasing"
    assert sum(count for outcome, count in adapter.counts.items() if outcome.startswith("rejected")) == 5
    assert adapter.offer(drive[5][0], camera, drive[5][2], stamp - 10.0) == "keyframe"  # a looped bag: start afresh


def test_a_frozen_image_stream_never_becomes_a_sample(adapter, drive):
    """A driver that repeats one image at 15 Hz while the odometry moves on (a few mm per frame): the frames that
    moved a keyframe's distance are rejected as frozen, none is trained on."""
    frozen = drive[0][0]
    outcomes = [adapter.offer(frozen, camera, pose, stamp) for _, camera, pose, stamp in drive]
    # a keyframe chain restarts after 1 s without an accepted frame (RESTART_AFTER), but never gets a sample
    assert outcomes[0] == "keyframe" and outcomes.count("keyframe") <= 3 and adapter.samples_seen == 0
    assert outcomes.count("rejected: image frozen while moving") >= 25
    assert adapter.offer(drive[-1][0], drive[-1][1], drive[-1][2], drive[-1][3] + 0.05) == "keyframe"  # live again


def test_a_moving_camera_gives_samples_updates_and_a_guarded_publish(adapter, drive):
    outcomes = [adapter.offer(*frame) for frame in drive]
    assert outcomes.count("sample") >= 8 and adapter.ready() and len(adapter.holdout) >= 2
    assert adapter.check() == "waiting"  # no update yet
    losses = [adapter.update() for _ in range(4)]
    assert all(loss is not None and 0 < loss < 1 for loss in losses)
    outcome = adapter.check()
    assert outcome in ("published", "kept")
    score = adapter.score(adapter.published)
    assert math.isfinite(score.loss) and 0.5 <= score.scale <= 2.0
    if outcome == "published":
        assert adapter.published_score.loss < adapter.replaced_score.loss  # better on the same held-out samples
        state, metadata = load_checkpoint(adapter.output_dir / LATEST)
        assert metadata == adapter.checkpoint_metadata(adapter.published)
        assert all(torch.equal(state[k], v) for k, v in adapter.published.state.items())


def test_a_diverged_model_is_rolled_back_to_the_published_weights(adapter, drive):
    for frame in drive:
        adapter.offer(*frame)
    for _ in range(2):
        adapter.update()
    with torch.no_grad():  # a wrecked update: every trainable weight becomes NaN
        for average in adapter._ema:
            average.fill_(float("nan"))
    assert adapter.check() == "rolled back" and adapter.counts["rolled back"] == 1
    assert not (adapter.output_dir / LATEST).exists()  # nothing worse was ever published
    restored = adapter.candidate()
    assert restored.scale == 1.0 and all(torch.equal(restored.state[k], v) for k, v in adapter.start.state.items())
    assert adapter.update() is not None  # training goes on from the restored weights


def test_a_non_finite_loss_rolls_the_training_weights_back(adapter, drive):
    for frame in drive:
        adapter.offer(*frame)
    with torch.no_grad():
        for p in adapter._trainable:
            p.fill_(float("nan"))
    assert adapter.update() is None and adapter.counts["rolled back"] == 1
    assert all(torch.equal(adapter.candidate().state[k], v) for k, v in adapter.start.state.items())


def test_reset_publishes_the_starting_weights(adapter):
    path = adapter.reset()
    state, _ = load_checkpoint(path)
    assert all(torch.equal(state[k], v) for k, v in adapter.start.state.items())


def test_config_ranges_are_checked():
    with pytest.raises(ValueError, match="ema_decay is out of range"):
        AdaptationConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="trainable: 'everything' is not one of"):
        AdaptationConfig(trainable="everything")


# Two ways a start publishes depth 1.3x too far: a head range declared 1.3x too large, or a training focal length
# recorded 1/1.3 of the camera's (depth_node's focal correction then multiplies by 1.3: the adaptation must see it).
SCALE_ERRORS = {"max_depth": lambda m: {"max_depth": m.max_depth * 1.3},
                "train_focal_px": lambda m: {"train_focal_px": m.train_focal_px / 1.3}}


@pytest.fixture(params=sorted(SCALE_ERRORS))
def too_far(request, tmp_path):
    """The bundled metric model's weights saved so that the depth it publishes (focal correction included) is
    exactly 1.3x too far, in each way of :data:`SCALE_ERRORS`."""
    from dataclasses import replace

    from depth_ros.checkpoints import BUNDLED_MODEL, build_model, save_checkpoint

    model, metadata = build_model(BUNDLED_MODEL)
    return save_checkpoint(tmp_path / "far.safetensors", model,
                           replace(metadata, **SCALE_ERRORS[request.param](metadata)))


def test_odometry_consistent_scale_measures_a_known_scale_error(drive, too_far, tmp_path):
    """The held-out scale ratio must see the factor between the bundled model and :func:`too_far`, whether it comes
    from the head's range or from the focal correction. Frames 300-371 were not trained on."""
    from depth_ros.checkpoints import BUNDLED_MODEL

    config = AdaptationConfig(min_translation=0.02, holdout_every=2)
    scores = []
    for checkpoint in (BUNDLED_MODEL, too_far):
        adapter = OnlineAdapter(checkpoint, tmp_path / "out", config)
        for frame in drive:
            adapter.offer(*frame)
        assert len(adapter.holdout) >= 4
        scores.append(adapter.score(adapter.published))
    metric, far = scores
    assert 0.85 < metric.scale < 1.15  # a metric model: within 15 % of the motion's scale
    assert far.scale / metric.scale == pytest.approx(1.3, rel=0.03)
    assert far.loss > metric.loss


def test_the_scale_group_corrects_what_depth_node_publishes(drive, too_far, tmp_path):
    """Default ``trainable: scale``: updates on real frames pull the too-far model's factor down until the held-out
    scale ratio is near 1; the published checkpoint holds the same weights and the factor as its ``scale``, and the
    depth it gives through the estimator (depth_node's conversion, this camera's fx) is the start's times that
    factor: the adaptation corrects the published depth, focal correction included."""
    from depth_ros.estimator import DepthEstimator

    config = AdaptationConfig(min_translation=0.02, holdout_every=2, lr=0.05, min_updates_between_checks=20)
    adapter = OnlineAdapter(too_far, tmp_path / "out", config)
    for frame in drive:
        adapter.offer(*frame)
    start = adapter.score(adapter.start)
    assert start.scale > 1.1
    for _ in range(20):
        assert adapter.update() is not None
    assert adapter.check() == "published"
    published = adapter.published_score
    assert abs(math.log(published.scale)) < abs(math.log(start.scale)) / 3 and published.loss < start.loss
    assert adapter.published.scale == pytest.approx(published.scale / start.scale, rel=0.05)
    state, metadata = load_checkpoint(adapter.output_dir / LATEST)
    assert metadata.scale == pytest.approx(adapter.metadata.scale * adapter.published.scale)
    assert metadata.max_depth == adapter.metadata.max_depth
    rgb, camera = drive[0][:2]
    depths = [DepthEstimator.from_checkpoint(path, device="cpu").infer(rgb, fx=camera.fx)
              for path in (too_far, adapter.output_dir / LATEST)]
    assert np.median(depths[1] / depths[0]) == pytest.approx(adapter.published.scale, rel=1e-3)
    assert all(torch.equal(state[k], v) for k, v in adapter.start.state.items())  # structure untouched
