"""Unknown options to create_task / create_mixer are named, with a close match and the known options."""

from __future__ import annotations

import pytest

from recurrences.layers import create_mixer
from recurrences.tasks import create_task


def test_unknown_task_option_is_named_with_a_suggestion():
    with pytest.raises(TypeError) as e:
        create_task("parity", train_lengths=(1, 20), curriculum_stepz=30, val_examples=4)
    msg = str(e.value)
    assert "unknown option(s) 'curriculum_stepz' (did you mean 'curriculum_steps'?)" in msg
    assert "known options:" in msg and "modulus" not in msg  # parity has no modulus
    assert "'val_examples'" not in msg.split(";")[0]  # only the unknown one is named
    with pytest.raises(TypeError, match=r"'modulos' \(did you mean 'modulus'\?\)"):
        create_task("cycle_navigation", modulos=3)


def test_unknown_mixer_option_is_named_with_a_suggestion():
    with pytest.raises(
        TypeError, match=r"create_mixer\('rat'\): unknown option\(s\) 'chunk_sise' \(did you mean"
    ):
        create_mixer("rat", d_model=32, chunk_sise=4)


def test_a_bad_value_keeps_the_factorys_own_message():
    with pytest.raises(TypeError, match="train_lengths.*pair"):
        create_task("parity", train_lengths=5)
