"""Writing outputs safely: nothing half-written ever carries its final name, and every file gets the permissions a
plain ``open`` would give it (0666 / folders 0777, minus the umask: 0644 / 0755 with the usual umask 022), so a
model, a training state or an exported network is readable by the other users of the machine, as usual.

The one atomic writer of depth_ros (checkpoints, training states and summaries, teacher labels, ONNX exports,
TensorRT engines): :func:`atomic_write`; for output folders (bags, reconstructions): :func:`staged_folder`.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def apply_default_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode ``open`` / ``mkdir`` would give it:
    0666 for files, 0777 for folders, minus the process umask. Writers that create files 0600 (``mkstemp``,
    safetensors' ``save_file``, Accelerate's ``save_state``) are corrected by this."""
    mask = _umask()
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary file path in the same folder to write to (by name: any writer
    that opens a path); when the block completes it gets the default permissions (:func:`apply_default_permissions`)
    and is renamed over ``path``. On an error (or Ctrl-C) it is removed and any previous file at ``path`` is left as
    it was.

    The temporary name is ``.<name>.<pid>.<random>.tmp<suffix>`` (the suffix kept for writers that take the format
    from the file name: OpenCV, open3d); those of earlier writes of ``path`` whose process no longer runs (killed
    mid-write) are removed first. The parent folder is created when missing.

    Raises:
        OSError: the folder cannot be created or written (nothing is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create the folder ``path`` atomically: yields a path of the same name inside a staging folder beside it
    (``.<name>.<random>.partial/<name>``, not created: a writer that insists on creating its folder, such as
    rosbags' Writer, can). When the block completes it gets the default permissions and is renamed to ``path``. On
    an error (or Ctrl-C) the staging folder is removed and nothing exists at ``path``.

    Raises:
        FileExistsError: ``path`` exists (checked first, and again by the rename).
        OSError: the parent folder cannot be created or written.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; remove it or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging / path.name
        apply_default_permissions(staging / path.name)
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp<suffix>`` files beside ``path`` left by writes whose process has died."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
