"""Checkpoints: round trip, atomic writes, optimizer flattening, clear errors for corrupted files."""

from __future__ import annotations

import json
import os

import pytest
import torch

from recurrences.train.checkpoint import (
    CHECKPOINT_JSON,
    CheckpointError,
    atomic_write_text,
    encode_rng_state,
    flatten_optimizer_state,
    has_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unflatten_optimizer_state,
)


def _tensors() -> dict[str, torch.Tensor]:
    w = torch.randn(3, 4)
    return {
        "model.a": w,
        "model.tied": w,
        "model.b": torch.arange(5),
        "model.c": torch.randn(2, 2, dtype=torch.float64),
    }


def test_round_trip_and_old_files_removed(tmp_path):
    t = _tensors()
    assert load_checkpoint(tmp_path) is None and not has_checkpoint(tmp_path)
    save_checkpoint(tmp_path, t, {"step": 3, "history": [{"x": 1.5}]})
    (tmp_path / ".checkpoint.json.abc.tmp").write_text("left by a killed writer")
    save_checkpoint(tmp_path, t, {"step": 5, "history": [{"x": 2.5}]})
    got, meta = load_checkpoint(tmp_path)
    assert meta == {"step": 5, "history": [{"x": 2.5}]}
    assert got.keys() == t.keys() and all(torch.equal(got[k], t[k]) and got[k].dtype == t[k].dtype for k in t)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([CHECKPOINT_JSON, "checkpoint-000000005.safetensors"])
    # nothing pickled: the JSON is plain JSON and the tensor file starts with a safetensors header
    json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    head = (tmp_path / "checkpoint-000000005.safetensors").read_bytes()[:8]
    assert int.from_bytes(head, "little") < 10_000


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_a_crash_between_the_two_files_keeps_the_previous_checkpoint(tmp_path):
    t = _tensors()
    save_checkpoint(tmp_path, t, {"step": 1})
    # simulate dying after the new tensor file but before the JSON commit record
    (tmp_path / "checkpoint-000000002.safetensors").write_bytes(b"partial garbage")
    got, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 1 and torch.equal(got["model.a"], t["model.a"])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_json", "not valid JSON"),
        ("truncate_tensors", "sha256 mismatch"),
        ("flip_tensor_byte", "sha256 mismatch"),
        ("remove_tensors", "missing or unreadable"),
        ("wrong_format", "not a recurrences-checkpoint"),
        ("drop_meta", "partial"),
    ],
)
def test_corruption_gives_a_clear_error(tmp_path, damage, message):
    save_checkpoint(tmp_path, _tensors(), {"step": 2})
    js = tmp_path / CHECKPOINT_JSON
    tf = tmp_path / "checkpoint-000000002.safetensors"
    if damage == "truncate_json":
        js.write_text(js.read_text()[:20])
    elif damage == "truncate_tensors":
        tf.write_bytes(tf.read_bytes()[:-7])
    elif damage == "flip_tensor_byte":
        b = bytearray(tf.read_bytes())
        b[-1] ^= 0xFF
        tf.write_bytes(bytes(b))
    elif damage == "remove_tensors":
        os.unlink(tf)
    else:
        rec = json.loads(js.read_text())
        if damage == "wrong_format":
            rec["format"] = "pickle"
        else:
            del rec["meta"]
        js.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, betas=(0.9, 0.98))
    for _ in range(2):
        opt.zero_grad()
        lin(torch.randn(4, 3)).sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    tensors = {k: v.clone() for k, v in tensors.items()}  # a checkpoint holds copies, not the live state
    meta = json.loads(json.dumps(meta))  # through JSON, as in a checkpoint
    lin2 = torch.nn.Linear(3, 2)
    lin2.load_state_dict(lin.state_dict())
    opt2 = torch.optim.AdamW(lin2.parameters(), lr=0.1)
    opt2.load_state_dict(unflatten_optimizer_state(tensors, meta))
    assert opt2.param_groups[0]["betas"] == (0.9, 0.98)
    x = torch.randn(4, 3)
    for o, m in ((opt, lin), (opt2, lin2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    assert torch.equal(lin.weight, lin2.weight) and torch.equal(lin.bias, lin2.bias)


def test_rng_state_round_trip():
    state = json.loads(json.dumps(encode_rng_state()))
    a = torch.rand(5)
    restore_rng_state(state)
    assert torch.equal(torch.rand(5), a)
    with pytest.raises(CheckpointError, match="RNG"):
        restore_rng_state({"cpu": "not base64!"})
