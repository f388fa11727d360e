"""Bad input on the command line ends in one line naming what was wrong (exit 2), not a traceback."""

from __future__ import annotations

import pytest
import torch

from recurrences.cli import main
from recurrences.layers import available_mixers, create_mixer
from recurrences.train import TrainConfig


def test_garbage_store_is_named(tmp_path, capsys):
    bad = tmp_path / "runs.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    assert main(["report", "--db", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "runs.sqlite" in err and "not a usable SQLite database" in err and "Traceback" not in err
    assert main(["constants", "report", "--db", str(bad)]) == 2
    assert "not a usable SQLite database" in capsys.readouterr().err


def test_constants_read_says_when_nothing_was_read(capsys):
    assert main(["constants", "read", "hello world"]) == 1
    assert "no series or continued fraction" in capsys.readouterr().err
    assert main(["constants", "read", r"\frac{\pi}{4} = \sum_{k=0}^{\infty} \frac{(-1)^k}{2k+1}"]) == 0


def test_output_folder_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["arena", "--out", str(f), "--tasks", "parity", "--models", "rat", "--no-progress"]) == 2
    assert "afile" in capsys.readouterr().err


def test_zero_steps_rejected():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


@pytest.mark.parametrize("name", available_mixers())
def test_dtype_mismatch_and_empty_sequences(name):
    m = create_mixer(name, d_model=8, n_heads=2)
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(2, 5, 8, dtype=torch.float64))
    assert m(torch.randn(2, 0, 8)).shape == (2, 0, 8)
