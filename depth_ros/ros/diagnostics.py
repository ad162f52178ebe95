"""Running statistics of depth_node and their diagnostic_msgs/DiagnosticStatus form.

The node's callbacks and worker thread report events to one :class:`NodeStats` (thread-safe); a timer turns the
statistics into a status for ``/diagnostics`` (rqt_robot_monitor, diagnostic_aggregator) once per period.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

ACCURACY_METRICS = ("abs_rel", "rmse", "delta1")
NETWORK_STAGES = ("preprocess", "inference", "postprocess")  # together: the "inference latency"


class NodeStats:
    """Counters and latency sums since start-up (totals) and since the last report (rates, means).

    Times are seconds from ``time.monotonic`` (receipt) or the ROS clock (stamp latency, computed by the caller).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self.received_total = 0
        self.processed_total = 0
        self.dropped_total = 0
        self.rejected_total = 0
        self._period = self._new_period()
        self._accuracy_sums = dict.fromkeys(ACCURACY_METRICS, 0.0)
        self.accuracy_frames = 0
        self.checkpoint = ""
        self.model_swaps = 0
        self.rejected_checkpoints = 0

    @staticmethod
    def _new_period() -> dict:
        return {"received": 0, "processed": 0, "rejected": 0, "idle": 0, "end_to_end": 0.0, "from_stamp": 0.0,
                "stamped": 0, "stages": {}}

    def received(self) -> None:
        """An image arrived (before any check)."""
        with self._lock:
            self.received_total += 1
            self._period["received"] += 1

    def dropped(self) -> None:
        """A waiting image was replaced by a newer one before the worker took it (newest frame wins)."""
        with self._lock:
            self.dropped_total += 1

    def rejected(self) -> None:
        """A message was malformed and dropped."""
        with self._lock:
            self.rejected_total += 1
            self._period["rejected"] += 1

    def idle(self) -> None:
        """An image was skipped because nothing subscribes to any output."""
        with self._lock:
            self._period["idle"] += 1

    def processed(self, stages: dict[str, float], end_to_end: float, from_stamp: float | None) -> None:
        """A frame was published.

        Args:
            stages: seconds per stage (the pipeline's preprocess, inference, postprocess, cloud, grid, plus the
                node's decode and publish).
            end_to_end: seconds from the image's receipt to the last publication (includes waiting for the worker).
            from_stamp: seconds from the image's header stamp to the last publication (ROS clock); None when the
                stamp is unset or from another clock (then not averaged).
        """
        with self._lock:
            self.processed_total += 1
            period = self._period
            period["processed"] += 1
            period["end_to_end"] += end_to_end
            if from_stamp is not None:
                period["from_stamp"] += from_stamp
                period["stamped"] += 1
            for stage, seconds in stages.items():
                period["stages"][stage] = period["stages"].get(stage, 0.0) + seconds

    def model(self, checkpoint: str, swapped: bool) -> None:
        """The model in use is now ``checkpoint`` (after a swap when ``swapped``); accuracy restarts with it."""
        with self._lock:
            self.checkpoint = checkpoint
            self.model_swaps += int(swapped)
            self._accuracy_sums = dict.fromkeys(ACCURACY_METRICS, 0.0)
            self.accuracy_frames = 0

    def checkpoint_rejected(self) -> None:
        """A checkpoint offered at run time could not be used (the old model kept running)."""
        with self._lock:
            self.rejected_checkpoints += 1

    def accuracy(self, metrics: dict[str, float]) -> None:
        """Per-frame metrics against the reference depth (depth_ros.metrics names); averaged over the frames of the
        current model."""
        with self._lock:
            self.accuracy_frames += 1
            for name in ACCURACY_METRICS:
                self._accuracy_sums[name] += metrics[name]

    def status(self, name: str, hardware_id: str) -> DiagnosticStatus:
        """DiagnosticStatus for the period since the previous call (and totals since start-up); resets the period.

        Level WARN when no image arrived in the period or some were malformed, else OK (the message says "idle"
        when images were skipped because nothing subscribes).
        """
        with self._lock:
            now = time.monotonic()
            seconds = max(now - self._since, 1e-9)
            period, self._period, self._since = self._period, self._new_period(), now
            processed = period["processed"]
            values = {
                "input rate (Hz)": period["received"] / seconds,
                "processed rate (Hz)": processed / seconds,
                "received frames": self.received_total,
                "processed frames": self.processed_total,
                "dropped frames": self.dropped_total,
                "rejected messages": self.rejected_total,
                "checkpoint": self.checkpoint,
                "model swaps": self.model_swaps,
                "rejected checkpoints": self.rejected_checkpoints,
            }
            if processed:
                stages = period["stages"]
                network = sum(stages.get(name, 0.0) for name in NETWORK_STAGES)
                values["inference latency (ms)"] = 1000 * network / processed
                values["end-to-end latency (ms)"] = 1000 * period["end_to_end"] / processed
                if period["stamped"]:
                    values["latency from stamp (ms)"] = 1000 * period["from_stamp"] / period["stamped"]
                for stage, seconds in stages.items():
                    values[f"{stage} (ms)"] = 1000 * seconds / processed
            if self.accuracy_frames:
                values["accuracy frames"] = self.accuracy_frames
                values["AbsRel"] = self._accuracy_sums["abs_rel"] / self.accuracy_frames
                values["RMSE (m)"] = self._accuracy_sums["rmse"] / self.accuracy_frames
                values["delta1"] = self._accuracy_sums["delta1"] / self.accuracy_frames
        if period["received"] == 0:
            level, message = DiagnosticStatus.WARN, "no images received"
        elif period["rejected"]:
            level, message = DiagnosticStatus.WARN, f"{period['rejected']} malformed message(s) dropped"
        elif period["idle"] and not processed:
            level, message = DiagnosticStatus.OK, "idle: nothing subscribes to depth, points or occupancy"
        else:
            level, message = DiagnosticStatus.OK, f"{values['processed rate (Hz)']:.1f} Hz"
        return DiagnosticStatus(
            level=level, name=name, message=message, hardware_id=hardware_id,
            values=[KeyValue(key=key, value=_format(value)) for key, value in values.items()],
        )


def _format(value) -> str:
    return str(value) if isinstance(value, (int, str)) else f"{value:.4g}"
