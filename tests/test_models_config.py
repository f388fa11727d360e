"""ModelConfig: validation naming the field, JSON/TOML round-trips, hybrid patterns, for_task."""

from __future__ import annotations

import pytest

import recurrences.train.testing  # noqa: F401  (registers the toy mixers and task)
from recurrences.models import ModelConfig
from recurrences.tasks import TaskIO, create_task


def _cfg(**kw) -> ModelConfig:
    base = {"mixer": "_toy-ema", "vocab_size": 7, "n_outputs": 3, "d_model": 16, "n_heads": 2}
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize(
    "field, value",
    [
        ("d_model", -1),
        ("d_model", 0),
        ("n_layers", 0),
        ("n_heads", 0),
        ("mlp_ratio", -0.5),
        ("dropout", 1.0),
        ("input_kind", "pixels"),
        ("head", "regress"),
        ("pooling", "max"),
        ("n_outputs", 0),
        ("norm_eps", 0.0),
        ("vocab_size", -3),
        ("mixer", ""),
    ],
)
def test_validation_names_the_field(field, value):
    with pytest.raises((ValueError, TypeError), match=rf"ModelConfig\.{field}"):
        _cfg(**{field: value})


def test_default_construction_error_message():
    with pytest.raises(ValueError, match=r"ModelConfig\.d_model must be a positive int, got -1"):
        ModelConfig(d_model=-1, vocab_size=5)


def test_cross_field_checks():
    with pytest.raises(ValueError, match="divisible"):
        _cfg(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig(mixer="_toy-ema", input_kind="tokens", n_outputs=2)
    with pytest.raises(ValueError, match="n_features"):
        ModelConfig(mixer="_toy-ema", input_kind="features", n_outputs=2)
    with pytest.raises(ValueError, match="tie_embeddings"):
        _cfg(tie_embeddings=True)  # classify head
    with pytest.raises(ValueError, match="lm"):
        ModelConfig(mixer="_toy-ema", input_kind="features", n_features=3, head="lm")
    with pytest.raises(TypeError, match="JSON"):
        _cfg(mixer_options={"f": object()})
    with pytest.raises(TypeError, match=r"mixer_options\['_toy-ema'\]"):
        _cfg(mixer_options={"_toy-ema": 3})


def test_lm_head_defaults_n_outputs_to_vocab():
    c = ModelConfig(mixer="_toy-ema", vocab_size=11, head="lm")
    assert c.n_outputs == 11


def _rich() -> ModelConfig:
    return ModelConfig(
        mixer=["_toy-ema", "_toy-bimean"],
        mixer_options={"init_decay": 0.5, "_toy-bimean": {"form": "reference"}, "w": [1, 2]},
        d_model=24,
        n_layers=3,
        n_heads=3,
        mlp_ratio=1.5,
        dropout=0.1,
        input_kind="features",
        n_features=5,
        head="tagging",
        n_outputs=4,
        pooling="mean",
        norm_eps=1e-6,
    )


def test_json_round_trip(tmp_path):
    c = _rich()
    assert c.mixer == "_toy-ema|_toy-bimean"
    assert ModelConfig.from_json(c.to_json()) == c
    assert ModelConfig.from_dict(c.to_dict()) == c
    p = tmp_path / "m.json"
    c.to_json(p)
    assert ModelConfig.from_json(p) == c


def test_toml_round_trip(tmp_path):
    c = _rich()
    text = c.to_toml()
    assert "vocab_size" not in text  # None is omitted, restored as the default
    assert ModelConfig.from_toml(text) == c
    p = tmp_path / "m.toml"
    c.to_toml(p)
    assert ModelConfig.from_toml(p) == c
    with pytest.raises(ValueError, match="TOML"):
        _cfg(mixer_options={"window": None}).to_toml()


def test_unknown_field_is_named_with_a_hint():
    d = _cfg().to_dict()
    d["d_modle"] = 3
    with pytest.raises(ValueError, match=r"'d_modle' \(did you mean 'd_model'\?\)"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_json("{nope")


def test_pattern_and_layer_options():
    c = _rich()
    assert c.pattern == ["_toy-ema", "_toy-bimean"]
    assert [c.layer_mixer(i) for i in range(3)] == ["_toy-ema", "_toy-bimean", "_toy-ema"]
    # common options for every layer, per-mixer entries on top, entries for unused mixers dropped
    assert c.layer_options(0) == {"init_decay": 0.5, "w": [1, 2]}
    assert c.layer_options(1) == {"init_decay": 0.5, "w": [1, 2], "form": "reference"}
    # per-mixer options of a registered mixer that the pattern does not use are ignored
    single = _cfg(
        mixer_options={"init_decay": 0.7, "_toy-bimean": {"form": "x"}, "_toy-ema": {"init_decay": 0.2}}
    )
    assert single.layer_options(0) == {"init_decay": 0.2}
    with pytest.raises(IndexError):
        c.layer_mixer(3)


def test_for_task():
    task = create_task("_toy", head="tagging", input_kind="features", n_features=4)
    c = ModelConfig.for_task(task.io, mixer="_toy-ema", d_model=8, n_heads=2)
    assert (c.input_kind, c.head, c.n_features, c.n_outputs, c.vocab_size) == (
        "features",
        "tagging",
        4,
        2,
        None,
    )
    with pytest.raises(ValueError, match="come from the task"):
        ModelConfig.for_task(task.io, mixer="_toy-ema", head="lm")
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.for_task(task.io, mixer="_toy-ema", width=3)
    lm = TaskIO(input_kind="tokens", head="lm", n_outputs=5, vocab_size=5, needs_causal=True)
    with pytest.raises(ValueError, match="causal"):
        ModelConfig.for_task(lm, mixer="_toy-ema|_toy-bimean", n_layers=2)
    assert ModelConfig.for_task(lm, mixer="_toy-ema").n_outputs == 5


def test_unknown_mixer_is_reported_with_the_field():
    c = _cfg(mixer="_toy-ema|_toy-emma")  # the constructor does not consult the registry
    with pytest.raises(KeyError, match=r"ModelConfig\.mixer: unknown mixer '_toy-emma'.*_toy-ema"):
        c.check_mixers()
    task = create_task("_toy")
    with pytest.raises(KeyError, match="ModelConfig.mixer"):
        ModelConfig.for_task(task.io, mixer="_toy-emma")
