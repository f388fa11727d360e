"""UCR/UEA time-series classification from ``.ts`` files (no downloads).

By default the files come from the copies shipped inside the sktime wheel,
``sktime/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``, located with ``importlib.util.find_spec``
without importing sktime (which is slow); ``root=`` points at any other directory holding
``<Name>/<Name>_TRAIN.ts`` or ``<Name>_TRAIN.ts`` (and the TEST file beside it).

The ``.ts`` format: ``#`` (or ``%``) comment lines, a header of ``@key value`` lines (``@problemName``,
``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``, ``@classLabel true <labels>``,
...), then ``@data`` and one instance per line: channels separated by ``:``, values by ``,``, the
class label last; ``?`` marks a missing value. Unequal lengths are right-padded with a mask.

Preprocessing: per-channel z-normalisation x <- (x - mu_c) / sigma_c with mu, sigma computed over the
real (unmasked, non-missing) values of the TRAIN file only; missing values are then set to 0 (the
channel mean). Class ids follow the order of the ``@classLabel`` header of the TRAIN file.

``create_task("ucr", dataset="BasicMotions")``: train split = the TRAIN file (per-epoch permutations
from (seed, step)), eval split ``"test"`` = the TEST file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ._common import ArrayClassificationTask, package_dir
from .base import register_task

__all__ = ["TSFile", "read_ts", "available_ts_datasets", "UCRTask", "TSFormatError"]


class TSFormatError(ValueError):
    """A malformed ``.ts`` file; the message names the file and the line."""


@dataclass
class TSFile:
    path: Path
    header: dict[str, str]
    class_labels: list[str]
    series: list[np.ndarray]  # each (T_i, C) float64, NaN where missing
    labels: list[str]
    lines: list[int]  # the line number of each instance (1-based)

    @property
    def n_channels(self) -> int:
        return int(self.series[0].shape[1])


def _parse_values(text: str, path: Path, lineno: int, channel: int) -> np.ndarray:
    parts = text.split(",")
    try:
        return np.array(parts, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(parts), dtype=np.float64)
    for j, p in enumerate(parts):
        p = p.strip()
        if p == "?":
            out[j] = np.nan
            continue
        try:
            out[j] = float(p)
        except ValueError:
            raise TSFormatError(
                f"{path}, line {lineno}: channel {channel}, value {j}: expected a number or '?', got {p!r}"
            ) from None
    return out


def read_ts(path: str | os.PathLike) -> TSFile:
    """Parse a classification ``.ts`` file (see the module docstring for the format)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise FileNotFoundError(f"cannot read the .ts file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise TSFormatError(f"{path}: not a UTF-8 text file ({e})") from e
    header: dict[str, str] = {}
    class_labels: list[str] | None = None
    series: list[np.ndarray] = []
    labels: list[str] = []
    lines: list[int] = []
    in_data = False
    n_channels: int | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise TSFormatError(
                    f"{path}, line {lineno}: expected a '@' header line or '@data', got {line[:40]!r}"
                )
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            value = value.strip()
            if key == "data":
                in_data = True
                if class_labels is None:
                    if header.get("targetlabel", "").split()[:1] == ["true"]:
                        raise TSFormatError(
                            f"{path}: a regression dataset (@targetLabel), not classification"
                        )
                    raise TSFormatError(f"{path}, line {lineno}: no '@classLabel true ...' line before @data")
                if header.get("timestamps", "false").lower() == "true":
                    raise TSFormatError(f"{path}: files with @timeStamps true are not supported")
                if "dimensions" in header:
                    try:
                        n_channels = int(header["dimensions"])
                    except ValueError:
                        raise TSFormatError(
                            f"{path}: '@dimensions {header['dimensions']}' is not an integer"
                        ) from None
                continue
            header[key] = value
            if key == "classlabel":
                words = value.split()
                if not words or words[0].lower() not in ("true", "false"):
                    raise TSFormatError(
                        f"{path}, line {lineno}: expected '@classLabel true <labels>', got {line!r}"
                    )
                if words[0].lower() == "false":
                    raise TSFormatError(
                        f"{path}, line {lineno}: '@classLabel false': not a classification dataset"
                    )
                class_labels = words[1:]
                if not class_labels:
                    raise TSFormatError(f"{path}, line {lineno}: '@classLabel true' lists no labels")
            continue
        parts = line.split(":")
        if len(parts) < 2:
            raise TSFormatError(f"{path}, line {lineno}: expected '<values>:<label>' (channels split by ':')")
        label = parts[-1].strip()
        if label not in class_labels:
            raise TSFormatError(
                f"{path}, line {lineno}: label {label!r} is not among the declared classes {class_labels}"
            )
        channels = [_parse_values(c, path, lineno, i) for i, c in enumerate(parts[:-1])]
        if n_channels is None:
            n_channels = len(channels)
        if len(channels) != n_channels:
            raise TSFormatError(f"{path}, line {lineno}: {len(channels)} channels, expected {n_channels}")
        t = max(len(c) for c in channels)
        x = np.full((t, n_channels), np.nan)
        for i, c in enumerate(channels):
            x[: len(c), i] = c
        series.append(x)
        labels.append(label)
        lines.append(lineno)
    if not in_data:
        raise TSFormatError(f"{path}: no '@data' line")
    if not series:
        raise TSFormatError(f"{path}: no instances after '@data'")
    return TSFile(path, header, class_labels, series, labels, lines)


def _default_root() -> Path:
    return (
        package_dir("sktime", purpose="the 'ucr' task (time series shipped with sktime)")
        / "datasets"
        / "data"
    )


def _files_for(root: Path, name: str) -> tuple[Path, Path] | None:
    for folder in (root / name, root):
        train, test = folder / f"{name}_TRAIN.ts", folder / f"{name}_TEST.ts"
        if train.is_file() and test.is_file():
            return train, test
    return None


def _header_kind(path: Path) -> str:
    """The kind of a .ts file from its header: "class" (``@classLabel true``), "regression"
    (``@targetLabel`` or ``@classLabel false``) or "unknown" (neither before ``@data``; the parser then
    says what is wrong)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(500), f):
                low = line.strip().lower()
                if low.startswith("@classlabel"):
                    return "class" if low.split()[1:2] == ["true"] else "regression"
                if low.startswith("@targetlabel"):
                    return "regression"
                if low.startswith("@data"):
                    break
    except OSError:
        pass
    return "unknown"


def available_ts_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the classification datasets (TRAIN and TEST ``.ts`` files) under ``root``."""
    root = Path(root) if root is not None else _default_root()
    if not root.is_dir():
        raise FileNotFoundError(f"option 'root': {root} is not a directory")
    names = set()
    for p in list(root.glob("*_TRAIN.ts")) + list(root.glob("*/*_TRAIN.ts")):
        name = p.name[: -len("_TRAIN.ts")]
        if _files_for(root, name) is not None and _header_kind(p) == "class":
            names.add(name)
    return sorted(names)


@lru_cache(maxsize=16)
def _load(train: str, test: str, mtimes: tuple[float, float], normalize: bool):
    tr, te = read_ts(train), read_ts(test)
    if te.n_channels != tr.n_channels:
        raise TSFormatError(
            f"{test}: {te.n_channels} channels, but the TRAIN file {train} has {tr.n_channels}"
        )
    classes = tr.class_labels
    index = {c: i for i, c in enumerate(classes)}
    for lab, ln in zip(te.labels, te.lines):
        if lab not in index:
            raise TSFormatError(f"{test}, line {ln}: label {lab!r} is not among the TRAIN classes {classes}")

    def stack(f: TSFile):
        lengths = np.array([len(s) for s in f.series], dtype=np.int64)
        x = np.full((len(f.series), int(lengths.max()), f.n_channels), np.nan)
        for i, s in enumerate(f.series):
            x[i, : len(s)] = s
        y = np.array([index[lab] for lab in f.labels], dtype=np.int64)
        return x, lengths, y

    xtr, ltr, ytr = stack(tr)
    xte, lte, yte = stack(te)
    if normalize:
        mean = np.nanmean(xtr, axis=(0, 1))  # padding is NaN too, so only real values count
        std = np.nanstd(xtr, axis=(0, 1))
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        xtr = (xtr - mean) / std
        xte = (xte - mean) / std
    xtr = np.nan_to_num(xtr, nan=0.0).astype(np.float32)
    xte = np.nan_to_num(xte, nan=0.0).astype(np.float32)
    return xtr, ltr, ytr, xte, lte, yte, tuple(classes)


@register_task("ucr")
class UCRTask(ArrayClassificationTask):
    """UCR/UEA time-series classification from .ts files (sktime's shipped copies by default)."""

    name = "ucr"

    def __init__(self, dataset: str = "GunPoint", root: str | None = None, normalize: bool = True) -> None:
        if not isinstance(dataset, str) or not dataset:
            raise TypeError(f"option 'dataset' must be a dataset name, got {dataset!r}")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"option 'root' must be a directory path or None, got {root!r}")
        if not isinstance(normalize, bool):
            raise TypeError(f"option 'normalize' must be a bool, got {normalize!r}")
        base = Path(root) if root is not None else _default_root()
        if not base.is_dir():
            raise FileNotFoundError(f"option 'root': {base} is not a directory")
        files = _files_for(base, dataset)
        if files is None:
            known = available_ts_datasets(base)
            match = [k for k in known if k.lower() == dataset.lower()]
            if not match:
                raise ValueError(
                    f"option 'dataset': unknown dataset {dataset!r} under {base}; available: {', '.join(known)}"
                )
            dataset = match[0]
            files = _files_for(base, dataset)
        train, test = files
        if _header_kind(train) == "regression":
            known = available_ts_datasets(base)
            raise ValueError(
                f"option 'dataset': {dataset!r} is not a classification dataset; available: {', '.join(known)}"
            )
        self.dataset = dataset
        self.root = None if root is None else str(root)
        self.normalize = normalize
        mt = (train.stat().st_mtime, test.stat().st_mtime)
        data = _load(str(train), str(test), mt, normalize)
        self.x_train, self.len_train, self.y_train, self.x_test, self.len_test, self.y_test, self.classes = (
            data
        )
        self.n_classes = len(self.classes)

    def config(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.root, "normalize": self.normalize}
