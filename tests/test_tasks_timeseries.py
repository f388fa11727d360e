"""UCR/UEA .ts loading: the shipped datasets, the parser on hand-written files, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrences.tasks import create_task

sktime_missing = importlib.util.find_spec("sktime") is None
needs_sktime = pytest.mark.skipif(sktime_missing, reason="sktime (the [data] extra) is not installed")


@needs_sktime
@pytest.mark.parametrize(
    "dataset,n_train,n_test,channels,length,classes",
    [
        ("GunPoint", 50, 150, 1, 150, 2),
        ("BasicMotions", 40, 40, 6, 100, 4),
        ("JapaneseVowels", 270, 370, 12, 29, 9),
        ("ACSF1", 100, 100, 1, 1460, 10),
    ],
)
def test_shipped_datasets(dataset, n_train, n_test, channels, length, classes):
    task = create_task("ucr", dataset=dataset)
    io = task.io
    assert (io.input_kind, io.head, io.n_features, io.n_outputs, io.max_length) == (
        "features",
        "classify",
        channels,
        classes,
        length,
    )
    assert len(task.y_train) == n_train and len(task.y_test) == n_test
    assert set(task.y_train.tolist()) == set(range(classes))
    assert task.eval_splits() == ["test"] and task.score_splits == ["test"]
    test = list(task.eval_batches("test", 64))
    assert sum(len(b) for b in test) == n_test
    batch = task.train_batch(0, 16, seed=0)
    assert batch.inputs.dtype == torch.float32 and batch.inputs.shape[0] == 16
    assert batch.inputs.shape[2] == channels and batch.targets.shape == (16,)
    assert batch.mask.dtype == torch.bool and batch.mask.shape == batch.inputs.shape[:2]
    assert bool(torch.isfinite(batch.inputs).all())
    # per-channel z-normalisation from the training statistics
    real = task.x_train[np.arange(task.x_train.shape[1])[None, :] < task.len_train[:, None]]
    np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(real.std(0), 1.0, atol=1e-3)


@needs_sktime
def test_unequal_lengths_are_masked():
    task = create_task("ucr", dataset="JapaneseVowels")
    assert task.len_train.min() == 7 and max(task.len_train.max(), task.len_test.max()) == 29
    for batch in task.eval_batches("test", 50):
        lengths = batch.mask.sum(1)
        assert int(lengths.max()) == batch.inputs.shape[1]
        assert bool((batch.inputs[~batch.mask] == 0).all())
        assert bool((batch.mask[:, :1]).all())


@needs_sktime
def test_raw_values_and_labels_match_the_file():
    """GunPoint parsed independently: raw value -> (raw - mean) / std, and the class order of the header."""
    task = create_task("ucr", dataset="GunPoint")
    unnorm = create_task("ucr", dataset="GunPoint", normalize=False)
    root = Path(importlib.util.find_spec("sktime").submodule_search_locations[0]) / "datasets" / "data"
    lines = (root / "GunPoint" / "GunPoint_TEST.ts").read_text().splitlines()
    data = lines[[ln.strip().lower() for ln in lines].index("@data") + 1 :]
    values = [float(v) for v in data[3].split(":")[0].split(",")]
    label = data[3].split(":")[1].strip()
    np.testing.assert_allclose(unnorm.x_test[3, :, 0], values, rtol=1e-6)
    assert task.y_test[3] == ["1", "2"].index(label)
    mean, std = unnorm.x_train[..., 0].mean(), unnorm.x_train[..., 0].std()
    np.testing.assert_allclose(task.x_test[3, :, 0], (np.array(values) - mean) / std, rtol=1e-4, atol=1e-4)


@needs_sktime
def test_determinism_and_epochs():
    task = create_task("ucr", dataset="BasicMotions")
    a, b = (
        task.train_batch(3, 8, seed=1),
        create_task("ucr", dataset="BasicMotions").train_batch(3, 8, seed=1),
    )
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    # 40 examples, batch 8: steps 0..4 cover the first epoch exactly once
    first = torch.cat([task.train_batch(s, 8, seed=1).inputs for s in range(5)])
    assert torch.unique(first.reshape(40, -1), dim=0).shape[0] == 40
    assert not torch.equal(first, torch.cat([task.train_batch(s, 8, seed=2).inputs for s in range(5)]))
    assert create_task("ucr", **task.config()).config() == task.config()


def test_unknown_dataset_lists_available(tmp_path):
    _write(tmp_path / "Toy_TRAIN.ts", TOY)
    _write(tmp_path / "Toy_TEST.ts", TOY)
    with pytest.raises(ValueError, match="available: Toy"):
        create_task("ucr", dataset="Nope", root=str(tmp_path))
    if not sktime_missing:
        with pytest.raises(ValueError, match="GunPoint"):
            create_task("ucr", dataset="GunPiont")


# ------------------------------------------------------------------------ hand-written .ts files

TOY = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
1,2,3:4,5,6:a
2,?,4,5:1,1,1,1:b
0,0:1,2:a
"""


def _write(path, text):
    path.write_text(text)
    return path


def test_parser_missing_values_and_unequal_lengths(tmp_path):
    _write(tmp_path / "Toy_TRAIN.ts", TOY)
    _write(tmp_path / "Toy_TEST.ts", TOY)
    task = create_task("ucr", dataset="Toy", root=str(tmp_path), normalize=False)
    assert task.x_train.shape == (3, 4, 2)
    assert task.len_train.tolist() == [3, 4, 2]
    assert task.y_train.tolist() == [0, 1, 0]
    assert task.x_train[1, :, 0].tolist() == [2, 0, 4, 5]  # '?' -> 0 (missing)
    assert task.x_train[0, :, 1].tolist() == [4, 5, 6, 0]
    norm = create_task("ucr", dataset="Toy", root=str(tmp_path))
    ch0 = np.array([1, 2, 3, 2, 4, 5, 0, 0], dtype=float)  # the real, non-missing values of channel 0
    np.testing.assert_allclose(
        norm.x_train[0, :3, 0], (np.array([1, 2, 3]) - ch0.mean()) / ch0.std(), rtol=1e-5
    )
    assert norm.x_train[1, 1, 0] == 0.0
    assert norm.io.max_length == 4


@pytest.mark.parametrize(
    "body,match",
    [
        (TOY.replace("1,2,3:4,5,6:a", "1,x,3:4,5,6:a"), r"line 10.*'x'"),
        (TOY.replace("0,0:1,2:a", "0,0:1,2:c"), r"line 12.*'c'"),
        (TOY.replace("0,0:1,2:a", "0,0:a"), r"line 12.*1 channels, expected 2"),
        (TOY.replace("@data\n", ""), r"line 9: expected a '@' header"),
        (TOY.replace("@classLabel true a b\n", ""), "classLabel"),
        (TOY.split("@data")[0], "no '@data'"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, body, match):
    _write(tmp_path / "Bad_TRAIN.ts", body)
    _write(tmp_path / "Bad_TEST.ts", TOY)
    with pytest.raises(ValueError, match=match) as info:
        create_task("ucr", dataset="Bad", root=str(tmp_path))
    assert "Bad_TRAIN.ts" in str(info.value) or "Bad" in str(info.value)


def test_bad_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        create_task("ucr", dataset="Toy", root=str(tmp_path / "missing"))
