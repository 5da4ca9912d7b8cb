"""The storage path (``--storage-path``: a local folder, or ``s3://…`` / ``gs://…`` on a cluster), where Tune
keeps its experiments and the trials' checkpoints and the search its state: its filesystem, the checkpoint
of a trial found and fetched from it, and Ray's logs copied into it when a search stops.
"""
from __future__ import annotations

from pathlib import Path

import ray.train

from tuning.worker import CHECKPOINT_FILE


def storage_fs(storage: str):
    """(pyarrow filesystem, root path inside it) of ``--storage-path``: a local folder or ``s3://…`` /
    ``gs://…`` (the cluster's), where Tune keeps its experiments and this driver its search state."""
    import pyarrow.fs

    if "://" in storage:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        return fs, root.rstrip("/")
    return pyarrow.fs.LocalFileSystem(), str(Path(storage).resolve())


def fetch_checkpoint(path: str, storage_path: str, dst: Path) -> Path:
    """Copy a reported checkpoint (local or on cloud storage) to ``dst``; return the checkpoint file."""
    ray.train.Checkpoint(path, filesystem=storage_fs(storage_path)[0]).to_directory(str(dst))
    return dst / CHECKPOINT_FILE


def resolve_checkpoint(reported: list[str], storage_path: str) -> str | None:
    """The checkpoint to log for a trial: the newest reported one that still exists, else the newest
    ``checkpoint_*`` folder beside them, else None. Ray Train keeps one checkpoint (``num_to_keep=1``): when
    ASHA stops a trial between Train saving a new checkpoint and Tune seeing its report, the last path Tune
    knows is the one Train has just deleted, and the one it kept is the trial's best (only improvements are
    reported)."""
    from pyarrow.fs import FileSelector, FileType

    fs = storage_fs(storage_path)[0]

    def usable(path: str) -> bool:
        return fs.get_file_info(f"{path}/{CHECKPOINT_FILE}").type == FileType.File

    for path in reversed(reported):
        if usable(path):
            return path
    if reported:
        run_dir = reported[-1].rstrip("/").rsplit("/", 1)[0]
        infos = fs.get_file_info(FileSelector(run_dir, allow_not_found=True))
        found = sorted(i.path for i in infos if i.type == FileType.Directory and i.base_name.startswith("checkpoint_"))
        for path in reversed(found):
            if usable(path):
                return path
    return None


def ray_logs(ctx) -> Path | None:
    """The log folder of the Ray session ``ray.init`` returned, when it is on this machine."""
    session = (getattr(ctx, "address_info", None) or {}).get("session_dir")
    return Path(session, "logs") if session and Path(session, "logs").is_dir() else None


def keep_ray_logs(ctx, storage: str, name: str) -> str | None:
    """Copy the local Ray session's logs to ``<storage>/<name>/ray-logs`` (the cloud store too); its path."""
    import pyarrow.fs

    if (logs := ray_logs(ctx)) is None:
        return None
    fs, root = storage_fs(storage)
    dst = f"{root}/{name}/ray-logs"
    fs.create_dir(dst, recursive=True)
    pyarrow.fs.copy_files(str(logs), dst, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    return f"{storage}/{name}/ray-logs"
