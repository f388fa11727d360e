"""Model configuration: a plain dataclass that round-trips through dict, JSON and TOML.

``ModelConfig`` names the mixer (or a hybrid pattern ``"a|b|..."`` that repeats over the layers:
layer ``i`` uses ``pattern[i % len(pattern)]``), the sizes, the input kind and the head. Validation
names the bad field: ``ModelConfig(d_model=-1)`` raises
``ValueError("ModelConfig.d_model must be a positive int, got -1")``.

:class:`ConfigMixin` gives any config dataclass (also the trainer's ``TrainConfig``) the same
``to_dict/from_dict``, ``to_json/from_json`` and ``to_toml/from_toml``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

__all__ = ["ConfigMixin", "ModelConfig", "INPUT_KINDS", "HEADS", "POOLINGS", "split_pattern"]

INPUT_KINDS = ("tokens", "features")
HEADS = ("classify", "tagging", "lm")
POOLINGS = ("last", "mean")

C = TypeVar("C", bound="ConfigMixin")


def _json_normalise(value: Any, where: str) -> Any:
    """A deep copy of ``value`` as plain JSON data (tuples become lists); error if not serialisable."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be JSON-serialisable (str/int/float/bool/None/list/dict): {e}") from e


def _toml_check(value: Any, where: str) -> None:
    """TOML has no null: refuse None nested inside a value rather than silently dropping it."""
    if value is None:
        raise ValueError(f"{where} is None, which TOML cannot store; use JSON for this config")
    if isinstance(value, dict):
        for k, v in value.items():
            _toml_check(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _toml_check(v, f"{where}[{i}]")


class ConfigMixin:
    """dict / JSON / TOML round-trips for a config dataclass. Unknown keys are an error."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {', '.join(hints)}; known fields: {', '.join(names)}"
            )
        return cls(**copy.deepcopy(data))

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls: type[C], text_or_path: str | Path) -> C:
        text = _read_text_or_path(text_or_path, ".json")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}.from_json: not valid JSON: {e}") from e
        return cls.from_dict(data)

    def to_toml(self, path: str | Path | None = None) -> str:
        data = {}
        defaults = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for k, v in self.to_dict().items():
            if v is None:
                f = defaults[k]
                if f.default is not None:  # omitting it would bring back a non-None default
                    raise ValueError(f"{type(self).__name__}.{k} is None, which TOML cannot store; use JSON")
                continue  # omitted: from_toml restores the default None
            _toml_check(v, f"{type(self).__name__}.{k}")
            data[k] = v
        text = tomli_w.dumps(data)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_toml(cls: type[C], text_or_path: str | Path) -> C:
        text = _read_text_or_path(text_or_path, ".toml")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{cls.__name__}.from_toml: not valid TOML: {e}") from e
        return cls.from_dict(data)


def _read_text_or_path(text_or_path: str | Path, suffix: str) -> str:
    if isinstance(text_or_path, Path) or (
        isinstance(text_or_path, str) and text_or_path.endswith(suffix) and "\n" not in text_or_path
    ):
        return Path(text_or_path).read_text()
    if not isinstance(text_or_path, str):
        raise TypeError(
            f"expected a {suffix[1:].upper()} string or a path, got {type(text_or_path).__name__}"
        )
    return text_or_path


def split_pattern(mixer: str) -> list[str]:
    """``"aussm|mamba"`` -> ``["aussm", "mamba"]`` (whitespace around names is ignored)."""
    return [p.strip() for p in mixer.split("|")]


def _positive_int(obj: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{obj}.{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )


def _choice(obj: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{obj}.{name} must be one of {choices}, got {value!r}")


@dataclass
class ModelConfig(ConfigMixin):
    """A sequence model: input adapter -> ``n_layers`` residual blocks -> final RMSNorm -> head.

    ``mixer``: a registered mixer name, or a hybrid pattern ``"a|b|..."`` (a list is accepted and
    joined) repeating over layers. ``mixer_options``: options given to every layer's mixer; an entry
    keyed by a mixer name whose value is a dict holds options for that mixer only
    (``{"window": 64, "swa": {"window": 1024}}``); per-mixer entries for mixers absent from the
    pattern are ignored, so one options dict can serve a whole grid. ``mlp_ratio``: hidden width of
    the gated (SwiGLU) MLP as a multiple of ``d_model``; 0 = no MLP. ``n_outputs`` for ``head="lm"``
    defaults to ``vocab_size``.
    """

    mixer: str = "attention"
    mixer_options: dict[str, Any] = field(default_factory=dict)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    input_kind: str = "tokens"
    vocab_size: int | None = None
    n_features: int | None = None
    head: str = "classify"
    n_outputs: int | None = None
    pooling: str = "last"
    tie_embeddings: bool = False
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        o = "ModelConfig"
        if isinstance(self.mixer, (list, tuple)):
            self.mixer = "|".join(str(m) for m in self.mixer)
        if not isinstance(self.mixer, str) or not self.mixer.strip():
            raise ValueError(f"{o}.mixer must be a mixer name or a pattern 'a|b|...', got {self.mixer!r}")
        if "|" not in self.mixer and isinstance(self.mixer_options, dict):
            # a named hybrid ("rat-swa") stands for its pattern, its options being defaults
            from recurrences.layers.base import expand_hybrid

            pattern, defaults = expand_hybrid(self.mixer.strip())
            if defaults or pattern != self.mixer.strip():
                for k, v in self.mixer_options.items():
                    if isinstance(v, dict) and isinstance(defaults.get(k), dict):
                        defaults[k] = {**defaults[k], **v}
                    else:
                        defaults[k] = v
                self.mixer, self.mixer_options = pattern, defaults
        names = split_pattern(self.mixer)
        if any(not n for n in names):
            raise ValueError(f"{o}.mixer has an empty name in pattern {self.mixer!r}")
        self.mixer = "|".join(names)
        if not isinstance(self.mixer_options, dict):
            raise TypeError(f"{o}.mixer_options must be a dict, got {type(self.mixer_options).__name__}")
        self.mixer_options = _json_normalise(self.mixer_options, f"{o}.mixer_options")
        for n in names:
            if n in self.mixer_options and not isinstance(self.mixer_options[n], dict):
                raise TypeError(
                    f"{o}.mixer_options[{n!r}] names a mixer of the pattern, so it must be a dict of options "
                    f"for that mixer, got {self.mixer_options[n]!r}"
                )
        _positive_int(o, "d_model", self.d_model)
        _positive_int(o, "n_layers", self.n_layers)
        _positive_int(o, "n_heads", self.n_heads)
        if self.d_model % self.n_heads:
            raise ValueError(f"{o}.d_model={self.d_model} must be divisible by {o}.n_heads={self.n_heads}")
        if (
            isinstance(self.mlp_ratio, bool)
            or not isinstance(self.mlp_ratio, (int, float))
            or not (math.isfinite(self.mlp_ratio) and self.mlp_ratio >= 0)
        ):
            raise ValueError(f"{o}.mlp_ratio must be a number >= 0 (0 = no MLP), got {self.mlp_ratio!r}")
        if self.mlp_ratio and int(round(self.mlp_ratio * self.d_model)) < 1:
            raise ValueError(
                f"{o}.mlp_ratio={self.mlp_ratio} gives an MLP hidden width < 1 at d_model={self.d_model}"
            )
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0 <= self.dropout < 1
        ):
            raise ValueError(f"{o}.dropout must be a number in [0, 1), got {self.dropout!r}")
        _choice(o, "input_kind", self.input_kind, INPUT_KINDS)
        _choice(o, "head", self.head, HEADS)
        _choice(o, "pooling", self.pooling, POOLINGS)
        _positive_int(o, "vocab_size", self.vocab_size, allow_none=True)
        _positive_int(o, "n_features", self.n_features, allow_none=True)
        if self.input_kind == "tokens" and self.vocab_size is None:
            raise ValueError(f"{o}.vocab_size must be a positive int when input_kind='tokens', got None")
        if self.input_kind == "features" and self.n_features is None:
            raise ValueError(f"{o}.n_features must be a positive int when input_kind='features', got None")
        if self.head == "lm":
            if self.input_kind != "tokens":
                raise ValueError(f"{o}.head='lm' needs input_kind='tokens', got {self.input_kind!r}")
            if self.n_outputs is None:
                self.n_outputs = self.vocab_size
        _positive_int(o, "n_outputs", self.n_outputs)
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"{o}.tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.tie_embeddings and not (self.head == "lm" and self.n_outputs == self.vocab_size):
            raise ValueError(f"{o}.tie_embeddings needs head='lm' with n_outputs == vocab_size")
        if (
            isinstance(self.norm_eps, bool)
            or not isinstance(self.norm_eps, (int, float))
            or not self.norm_eps > 0
        ):
            raise ValueError(f"{o}.norm_eps must be a positive number, got {self.norm_eps!r}")
        self.mlp_ratio = float(self.mlp_ratio)
        self.dropout = float(self.dropout)
        self.norm_eps = float(self.norm_eps)

    # -- the pattern -----------------------------------------------------------------------------
    @property
    def pattern(self) -> list[str]:
        """The mixer names of the repeating pattern (one name for a plain model)."""
        return split_pattern(self.mixer)

    def layer_mixer(self, i: int) -> str:
        """The mixer name of layer ``i``: ``pattern[i % len(pattern)]``."""
        if not 0 <= i < self.n_layers:
            raise IndexError(f"layer index {i} out of range for n_layers={self.n_layers}")
        p = self.pattern
        return p[i % len(p)]

    def layer_options(self, i: int) -> dict[str, Any]:
        """Options for layer ``i``'s mixer: the common entries, then its per-mixer entry on top."""
        name = self.layer_mixer(i)
        opts: dict[str, Any] = {}
        per: dict[str, Any] = {}
        registered = None
        for k, v in self.mixer_options.items():
            if k in self.pattern:
                if k == name:
                    per = v
                continue
            if isinstance(v, dict):
                if registered is None:
                    from recurrences.layers import available_mixers

                    registered = set(available_mixers())
                if k in registered:  # options for a mixer not used here
                    continue
            opts[k] = v
        opts.update(per)
        return copy.deepcopy(opts)

    def check_mixers(self) -> None:
        """Raise ``KeyError("ModelConfig.mixer: unknown mixer ...")`` unless every name of the pattern
        is registered (the constructor does not look at the registry, so that stored configs of
        removed mixers still load)."""
        from recurrences.layers import mixer_spec

        for n in self.pattern:
            try:
                mixer_spec(n)
            except KeyError as e:
                raise KeyError(f"ModelConfig.mixer: {e.args[0]}") from None

    @property
    def hidden_mlp(self) -> int:
        """Hidden width of the gated MLP (0 when there is none)."""
        return int(round(self.mlp_ratio * self.d_model)) if self.mlp_ratio else 0

    @classmethod
    def for_task(cls, task_io: Any, *, mixer: str | list[str], **sizes: Any) -> ModelConfig:
        """A config whose input adapter and head fit ``task_io`` (a :class:`~recurrences.tasks.TaskIO`).

        ``sizes`` set the other fields (d_model, n_layers, n_heads, mlp_ratio, mixer_options, ...).
        If the task needs a causal model (``task_io.needs_causal``) every mixer must be causal.
        """
        io_fields = ("input_kind", "head", "n_outputs", "vocab_size", "n_features", "pooling")
        clash = [k for k in sizes if k in io_fields]
        if clash:
            raise ValueError(f"ModelConfig.for_task: {clash} come from the task's io and cannot be given")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in sizes if k not in names]
        if unknown:
            raise ValueError(f"ModelConfig.for_task: unknown field(s) {unknown}; known fields: {names}")
        cfg = cls(
            mixer=mixer,
            input_kind=task_io.input_kind,
            head=task_io.head,
            n_outputs=task_io.n_outputs,
            vocab_size=task_io.vocab_size if task_io.input_kind == "tokens" else None,
            n_features=task_io.n_features if task_io.input_kind == "features" else None,
            pooling=task_io.pooling,
            **sizes,
        )
        cfg.check_mixers()
        if getattr(task_io, "needs_causal", False):
            from recurrences.layers import mixer_spec

            for i in range(min(cfg.n_layers, len(cfg.pattern))):
                n, opts = cfg.layer_mixer(i), cfg.layer_options(i)
                causal = bool(opts["causal"]) if "causal" in opts else mixer_spec(n).causal
                if not causal:
                    raise ValueError(
                        f"ModelConfig.for_task: the task needs a causal model but mixer {n!r} is bidirectional"
                    )
        return cfg
