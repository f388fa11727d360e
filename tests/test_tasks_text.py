"""Character-level LM: pydoc topics by default, any text by path; windows, vocabulary, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recurrences.tasks import create_task

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def test_default_corpus_is_pydoc_topics():
    from pydoc_data.topics import topics

    task = create_task("text", seq_len=64)
    text = "\n".join(topics[k] for k in sorted(topics))
    assert task.vocab == "".join(sorted(set(text)))
    io = task.io
    assert (io.head, io.input_kind, io.needs_causal, io.max_length) == ("lm", "tokens", True, 64)
    assert io.n_outputs == io.vocab_size == len(task.vocab) + 1
    assert task.metric == "bpc" and not task.higher_is_better
    assert len(task.train_ids) + len(task.val_ids) == len(text)
    assert task.decode(task.val_ids[:50]) == text[len(task.train_ids) : len(task.train_ids) + 50]


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"shared data folder absent ({SHAKESPEARE})")
def test_tinyshakespeare():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    task = create_task("text", path=str(SHAKESPEARE), seq_len=128, eval_windows=10)
    assert task.io.n_outputs == 66  # 65 distinct characters + the unknown id
    n_val = len(task.val_ids)
    assert abs(n_val - len(text) / 10) < 1 and len(task.train_ids) + n_val == len(text)
    batch = task.train_batch(4, 8, seed=0)
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (8, 128)
    assert batch.inputs.dtype == torch.int64 and bool(batch.mask.all())
    train_text = text[: len(task.train_ids)]
    for i in range(8):
        window = task.decode(batch.inputs[i])
        assert window in train_text
        assert torch.equal(batch.targets[i, :-1], batch.inputs[i, 1:])
        start = train_text.index(window)
        assert task.decode(batch.targets[i, -1:]) == train_text[start + 128]
    evals = list(task.eval_batches("val", 4))
    assert [len(b) for b in evals] == [4, 4, 2]
    starts = task.eval_starts()
    assert (starts[1:] - starts[:-1] >= 128).all() and starts[-1] + 129 <= n_val
    val_text = text[len(task.train_ids) :]
    assert task.decode(evals[0].inputs[1]) == val_text[starts[1] : starts[1] + 128]
    # same seed -> same windows; eval independent of everything but the config
    again = create_task("text", **task.config())
    assert torch.equal(again.train_batch(4, 8, seed=0).inputs, batch.inputs)
    assert not torch.equal(task.train_batch(4, 8, seed=1).inputs, batch.inputs)
    assert torch.equal(next(iter(again.eval_batches("val", 4))).inputs, evals[0].inputs)
    assert task.split_length("val") == 128


def test_vocab_option_and_unknown_chars(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabcxyz" * 10)
    task = create_task("text", path=str(path), seq_len=4, vocab="abc")
    assert task.io.n_outputs == 4 and task.unk_id == 3
    assert task.encode("axc").tolist() == [0, 3, 2]
    assert task.decode([0, 3]) == "a\ufffd"
    config = task.config()
    assert config["vocab"] == "abc" and len(config["corpus_sha256"]) == 64
    assert math.isclose(config["val_fraction"], 0.1)


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        create_task("text", path=str(tmp_path / "nope.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\nworld\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3"):
        create_task("text", path=str(bad))
    small = tmp_path / "small.txt"
    small.write_text("x" * 50)
    with pytest.raises(ValueError, match="seq_len"):
        create_task("text", path=str(small), seq_len=10)
    with pytest.raises(ValueError, match="seq_len"):
        create_task("text", seq_len=0)
    with pytest.raises(ValueError, match="val_fraction"):
        create_task("text", val_fraction=1.0)
    with pytest.raises(ValueError, match="corpus_sha256"):
        create_task("text", seq_len=8, corpus_sha256="0" * 64)
    with pytest.raises(KeyError, match="val"):
        list(create_task("text", seq_len=8).eval_batches("test", 2))
