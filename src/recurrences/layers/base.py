"""The Mixer contract and the registry every model, config, arena run and benchmark goes through.

A mixer maps (B, T, D) -> (B, T, D). ``mask`` (B, T) bool marks real (True) vs padding (False)
positions, and padding must never change real outputs. Causal mixers (``causal = True``) also support
``init_state`` / ``step`` / ``forward(x, state=..., return_state=True)``; stepping token by token equals
the full forward. Each family's computational forms are plain functions in its own module; the module
picks one with ``form=`` ("reference" is always the one to check against the paper; "auto", the
default, the fastest for the input at hand).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from recurrences._registry import bad_options, load_package_modules, unknown_name
from recurrences.scan import all_finite

__all__ = [
    "Mixer",
    "MixerSpec",
    "register_mixer",
    "create_mixer",
    "available_mixers",
    "mixer_spec",
    "check_mixer_input",
    "check_step_input",
    "register_hybrid",
    "expand_hybrid",
    "available_hybrids",
]


def check_mixer_input(name: str, x: Tensor, d_model: int, mask: Tensor | None = None) -> None:
    """Raise a clear error for a wrong rank, size, dtype, a non-finite x, or a malformed mask."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name}: x must have shape (B, T, D={d_model}), got rank {x.dim()} shape {tuple(x.shape)}"
        )
    if x.shape[-1] != d_model:
        raise ValueError(f"{name}: x has last dim {x.shape[-1]}, expected d_model={d_model}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point, got {x.dtype}")
    if not all_finite(x):
        raise ValueError(f"{name}: x contains NaN or inf")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"{name}: mask must be a bool tensor of shape (B, T) (True = real token)")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{name}: mask has shape {tuple(mask.shape)}, expected (B, T) = {tuple(x.shape[:2])}"
            )


def check_param_dtype(name: str, x: Tensor, p: Tensor | None, what: str = "x") -> None:
    """TypeError unless x has the dtype of the floating parameter p (or autocast is on, or p is None)."""
    if (
        p is not None
        and p.is_floating_point()
        and x.dtype != p.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise TypeError(
            f"{name}: {what} has dtype {x.dtype} but the mixer's parameters are {p.dtype}; "
            f"convert one of them (e.g. mixer.to({x.dtype}) or {what}.to({p.dtype})), or run under torch.autocast"
        )


def check_step_input(
    name: str, x_t: Tensor, d_model: int, like: Tensor | None = None, *, finite: bool = True
) -> None:
    """Raise a clear error unless x_t is one finite token per sequence, shape (B >= 1, D=d_model), in the
    dtype of the parameter ``like`` (when given; autocast excepted). ``finite=False`` leaves the finite
    check to the caller (:func:`check_finite_step_input`, or a compiled step that checks as it reads x_t).

    Called once per decoded token, so it is kept cheap: one reduction and one sync for the finite check
    (the exact elementwise check only runs when the sum is not finite).
    """
    if not isinstance(x_t, Tensor):
        raise TypeError(
            f"{name}: x_t must be a torch.Tensor of shape (B, D={d_model}), got {type(x_t).__name__}"
        )
    if x_t.dim() != 2:
        raise ValueError(f"{name}: x_t must have shape (B, D={d_model}), got {tuple(x_t.shape)}")
    if x_t.shape[1] != d_model:
        raise ValueError(f"{name}: x_t has last dim {x_t.shape[1]}, expected d_model={d_model}")
    if x_t.shape[0] == 0:
        raise ValueError(f"{name}: x_t holds no sequence (batch size 0)")
    if not x_t.is_floating_point():
        raise TypeError(f"{name}: x_t must be floating point, got {x_t.dtype}")
    if like is not None and x_t.device != like.device:
        raise ValueError(f"{name}: x_t is on {x_t.device} but the layer's weights are on {like.device}")
    check_param_dtype(name, x_t, like, "x_t")
    if finite:
        check_finite_step_input(name, x_t)


def check_finite_step_input(name: str, x_t: Tensor) -> None:
    """Raise a clear error when x_t holds a NaN or an infinity."""
    if not math.isfinite(float(x_t.detach().sum())) and not bool(torch.isfinite(x_t).all()):
        raise ValueError(f"{name}: x_t contains NaN or inf")


class Mixer(nn.Module):
    """Base class of token mixers. Subclasses set ``causal``, ``forms`` and implement ``_forward``.

    ``forms`` lists the names of the computational forms; it always contains "reference". The current
    form is ``self.form`` (settable; "auto" resolves per call through :meth:`resolve_form`).
    """

    causal: bool = True
    forms: tuple[str, ...] = ("reference",)

    def __init__(self, d_model: int, n_heads: int = 1, *, form: str = "auto") -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"{name}: d_model must be a positive int, got {d_model!r}")
        if not isinstance(n_heads, int) or n_heads <= 0:
            raise ValueError(f"{name}: n_heads must be a positive int, got {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"{name}: d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.form = form

    # -- forms -----------------------------------------------------------------------------------
    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, value: str) -> None:
        allowed = ("auto", *self.forms)
        if value not in allowed:
            raise ValueError(f"{type(self).__name__}: unknown form {value!r}; expected one of {allowed}")
        self._form = value

    def resolve_form(self, T: int) -> str:
        """The form used for length T: ``self.form`` unless it is "auto" (subclasses override)."""
        return self.forms[-1] if self._form == "auto" else self._form

    # -- the contract ----------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        state: Any = None,
        return_state: bool = False,
    ):
        check_mixer_input(type(self).__name__, x, self.d_model, mask)
        check_param_dtype(type(self).__name__, x, next(self.parameters(), None))
        if (state is not None or return_state) and not self.causal:
            raise ValueError(f"{type(self).__name__} is bidirectional: it has no recurrent state")
        if x.shape[0] == 0:  # an empty batch
            if return_state:
                raise ValueError(
                    f"{type(self).__name__}: return_state=True needs batch size >= 1, got an empty batch"
                )
            return x.new_zeros(x.shape)
        if x.shape[1] == 0:  # an empty sequence: nothing to mix, the state (if any) passes through
            if state is not None:
                state = self._check_state(state, x.shape[0])  # a state that does not fit is refused here too
            y = x.new_zeros(x.shape)
            if not return_state:
                return y
            return y, (self.init_state(x.shape[0], x.device, x.dtype) if state is None else state)
        return self._forward(x, mask=mask, state=state, return_state=return_state)

    def _forward(self, x: Tensor, *, mask: Tensor | None, state: Any, return_state: bool):
        raise NotImplementedError

    def _check_state(self, state: Any, batch_size: int) -> Any:
        """The state given to forward/step, checked against this layer and the batch size: a causal mixer
        overrides this to raise a clear error when the state does not fit (and may return it converted)."""
        return state

    def init_state(self, batch_size: int, device=None, dtype=None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no recurrent state (causal={self.causal})")

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not support step() (causal={self.causal})")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, form={self.form!r}, causal={self.causal}"


def causal_conv_skipping_padding(
    xi: Tensor, hist: Tensor, mask: Tensor | None, conv: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """A causal depthwise conv over [history; xi] that treats padded positions as deleted.

    xi: (B, T, C) conv inputs; hist: (B, C, K) the previous K inputs (oldest first); mask: (B, T) bool,
    True = real token, or None; conv: maps (B, C, K + T) to (B, C, T) (a conv without padding).
    Returns u (B, T, C) and the new history (B, C, K): the last K real inputs. With a mask the real
    tokens of each row are moved to the front (in order), convolved, and moved back, so a real token's
    window holds the real tokens before it: a prompt with holes or right padding gives the outputs and
    the state of the same prompt without them (the outputs at padded positions, convolutions of zeros,
    are not meaningful; the caller masks them). Without a mask it is a plain conv.
    """
    K = hist.shape[2]
    if mask is None:
        seq = torch.cat([hist, xi.transpose(1, 2)], dim=2)
        return conv(seq).transpose(1, 2), seq[:, :, seq.shape[2] - K :]
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # real positions first, in order
    xc = xi.gather(1, order.unsqueeze(-1).expand_as(xi))
    xc = torch.where(mask.gather(1, order).unsqueeze(-1), xc, 0)  # the padded tail convolves zeros
    seq = torch.cat([hist, xc.transpose(1, 2)], dim=2)
    uc = conv(seq).transpose(1, 2)
    u = uc.gather(1, torch.argsort(order, dim=1).unsqueeze(-1).expand_as(uc))
    n_real = mask.sum(1)  # the last K inputs are seq[:, :, n_real : n_real + K]
    idx = (n_real.view(-1, 1, 1) + torch.arange(K, device=xi.device).view(1, 1, K)).expand(
        -1, seq.shape[1], K
    )
    return u, seq.gather(2, idx)


@dataclass(frozen=True)
class MixerSpec:
    """A registered name: the factory, its default options, and what is known without building it."""

    name: str
    factory: Callable[..., Mixer]
    defaults: dict[str, Any] = field(default_factory=dict)
    causal: bool = True
    description: str = ""
    family: str = ""


_REGISTRY: dict[str, MixerSpec] = {}


def _load_builtins() -> None:
    load_package_modules("recurrences.layers")


def register_mixer(
    name: str,
    factory: Callable[..., Mixer] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    causal: bool | None = None,
    description: str = "",
    family: str = "",
):
    """Register ``factory`` (a Mixer subclass or a callable returning one) under ``name``.

    Usable as a decorator (``@register_mixer("lion-s", defaults={...})``) or a call. ``causal`` defaults
    to the class attribute of ``factory`` combined with a ``causal`` entry in ``defaults``.
    """

    def deco(f):
        if name in _REGISTRY and _REGISTRY[name].factory is not f:
            raise ValueError(f"mixer name {name!r} is already registered")
        d = dict(defaults or {})
        c = causal
        if c is None:
            c = bool(d.get("causal", getattr(f, "causal", True)))
        _REGISTRY[name] = MixerSpec(
            name, f, d, c, description or (f.__doc__ or "").strip().split("\n")[0], family
        )
        return f

    return deco(factory) if factory is not None else deco


def available_mixers(*, causal: bool | None = None) -> list[str]:
    """Names of all registered mixers (optionally only causal or only bidirectional ones), sorted."""
    _load_builtins()
    return sorted(n for n, s in _REGISTRY.items() if causal is None or s.causal == causal)


def mixer_spec(name: str) -> MixerSpec:
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("mixer", name, _REGISTRY)
    return _REGISTRY[name]


_HYBRIDS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}


def register_hybrid(name: str, pattern: str, options: dict[str, dict[str, Any]] | None = None) -> None:
    """Name a layer pattern, e.g. ``register_hybrid("rat-swa", "rat|swa", {"swa": {"window": 1024}})``.

    A hybrid is not a mixer (it spans several layers); models and the arena accept its name wherever they
    accept a pattern "a|b", with ``options`` as per-mixer defaults that explicit options override.
    """
    if "|" in name or name in _REGISTRY:
        raise ValueError(f"hybrid name {name!r} must not contain '|' nor be a mixer name")
    if name in _HYBRIDS and _HYBRIDS[name] != (pattern, options or {}):
        raise ValueError(f"hybrid name {name!r} is already registered")
    _HYBRIDS[name] = (pattern, dict(options or {}))


def available_hybrids() -> list[str]:
    _load_builtins()
    return sorted(_HYBRIDS)


def expand_hybrid(name: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``"rat-swa"`` -> ``("rat|swa", {"swa": {"window": 1024}})``; any other name or pattern is returned
    as it is, with no options."""
    _load_builtins()
    pattern, options = _HYBRIDS.get(name, (name, {}))
    return pattern, {k: dict(v) for k, v in options.items()}


def create_mixer(name: str, d_model: int, n_heads: int = 1, **options: Any) -> Mixer:
    """Build the mixer registered as ``name``: ``create_mixer("lion-s", d_model=128, n_heads=4)``."""
    spec = mixer_spec(name)
    kwargs = {**spec.defaults, **options}
    try:
        return spec.factory(d_model=d_model, n_heads=n_heads, **kwargs)
    except TypeError as e:
        raise bad_options("mixer", name, spec.factory, options, e) from e
