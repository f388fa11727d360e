"""Checkpoints: safetensors for tensors + JSON for everything else, written atomically, never pickled.

A run directory holds ``checkpoint.json`` (the commit record) and the tensor file it names,
``checkpoint-<step>.safetensors``. Saving writes the tensor file (temp file in the same directory,
fsync, ``os.replace``), then the JSON the same way; the JSON carries the tensor file's sha256, so a
crash at any moment leaves either the previous complete checkpoint or the new one. Older tensor
files are deleted only after the new JSON is in place.

Tensors: ``model.<name>`` (the model's state_dict) and ``optim.<param index>.<key>`` (the optimizer's
per-parameter state); the optimizer's param_groups and non-tensor state go to the JSON, as do the
RNG states (base64), the step, the configs and the history.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

__all__ = [
    "CheckpointError",
    "CHECKPOINT_JSON",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_checkpoint",
    "load_checkpoint",
    "has_checkpoint",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "encode_rng_state",
    "restore_rng_state",
]

CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "recurrences-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupted, partial, or from a different run."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, os.replace, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- RNG ---------------------------------------------------------------------------------------
def encode_rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device) as base64 strings."""
    out: dict[str, Any] = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()
        ]
    return out


def _decode(b64: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(b64.encode("ascii"))), dtype=torch.uint8).clone()


def restore_rng_state(state: dict[str, Any]) -> None:
    try:
        torch.set_rng_state(_decode(state["cpu"]))
        if "cuda" in state and torch.cuda.is_available():
            states = [_decode(s) for s in state["cuda"]]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint: bad RNG state: {e}") from e


# -- optimizer ---------------------------------------------------------------------------------
def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into named tensors and JSON data."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state_dict["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{int(idx)}.{k}"] = v
            else:
                scalars.setdefault(str(int(idx)), {})[k] = v
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# -- save / load -------------------------------------------------------------------------------
def _contiguous_copies(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights) and wants CPU contiguous data
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(run_dir: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write a checkpoint of ``tensors`` and JSON ``meta`` (must contain an int ``step``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = int(meta["step"])
    data = st_save(_contiguous_copies(tensors))
    name = f"checkpoint-{step:09d}.safetensors"
    atomic_write_bytes(run_dir / name, data)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "tensors_file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_bytes": len(data),
        "meta": meta,
    }
    atomic_write_text(run_dir / CHECKPOINT_JSON, json.dumps(record, allow_nan=True, sort_keys=True))
    # temp files of a writer that was killed mid-write (one writer per run dir, so none is live)
    for stale in run_dir.glob(".checkpoint*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    for old in run_dir.glob("checkpoint-*.safetensors"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()
    return run_dir / CHECKPOINT_JSON


def has_checkpoint(run_dir: str | Path | None) -> bool:
    return run_dir is not None and (Path(run_dir) / CHECKPOINT_JSON).is_file()


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(tensors, meta) of the checkpoint in ``run_dir``, or None if there is none.

    Raises :class:`CheckpointError` naming the file for anything corrupted, partial or unknown.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupted (not valid JSON: {e}); delete the run directory to restart"
        ) from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file")
    if record.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {record.get('version')!r}, expected {VERSION}")
    for k in ("tensors_file", "sha256", "meta"):
        if k not in record:
            raise CheckpointError(f"checkpoint {path} is partial: missing {k!r}")
    name = record["tensors_file"]
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise CheckpointError(f"checkpoint {path}: bad tensors_file {name!r}")
    tpath = run_dir / name
    try:
        data = tpath.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: tensor file {tpath} is missing or unreadable: {e}") from e
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: tensor file {tpath} is corrupted or partial (sha256 mismatch, {len(data)} bytes)"
        )
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {path}: cannot read tensor file {tpath}: {e}") from e
    meta = record["meta"]
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"checkpoint {path}: meta must be a dict with an int 'step'")
    return tensors, meta
