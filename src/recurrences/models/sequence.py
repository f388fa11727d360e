"""SequenceModel: input adapter -> residual blocks (one mixer each) -> final RMSNorm -> head.

    h_0 = E[x]  (token embedding)   or   h_0 = W_in x + b_in  (linear feature encoder)
    h_l = Block_l(h_{l-1}, mask),  l = 1..L          (pre-norm residual, see blocks.py)
    logits = Head(RMSNorm(h_L))

Heads: ``classify`` pools over real positions (the last real one, or the mean of the real ones)
-> (B, n_outputs); ``tagging`` -> (B, T, n_outputs); ``lm`` -> (B, T, n_outputs = vocab).
Padded positions (mask False) are zeroed at the input and after every block, so whatever sits there
(even NaN features or out-of-range ids) can never reach a real output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrences.layers.base import create_mixer

from .blocks import GatedMLP, ResidualBlock, RMSNorm
from .config import ModelConfig

__all__ = ["SequenceModel"]


class SequenceModel(nn.Module):
    """A stack of residual mixer blocks with an input adapter and a head, built from a :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        if not isinstance(config, ModelConfig):
            raise TypeError(f"SequenceModel: config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        c = config
        if c.input_kind == "tokens":
            self.embed: nn.Module = nn.Embedding(c.vocab_size, c.d_model)
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            self.embed = nn.Linear(c.n_features, c.d_model)
        self.embed_dropout = nn.Dropout(c.dropout) if c.dropout else nn.Identity()
        blocks = []
        for i in range(c.n_layers):
            mixer = create_mixer(c.layer_mixer(i), d_model=c.d_model, n_heads=c.n_heads, **c.layer_options(i))
            mlp = GatedMLP(c.d_model, c.hidden_mlp, c.dropout) if c.hidden_mlp else None
            blocks.append(ResidualBlock(mixer, mlp, c.d_model, dropout=c.dropout, eps=c.norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.head = nn.Linear(c.d_model, c.n_outputs, bias=c.head != "lm")
        if c.tie_embeddings:
            self.head.weight = self.embed.weight

    # -- properties ------------------------------------------------------------------------------
    @property
    def causal(self) -> bool:
        """True when every mixer is causal (then init_state / step / generate are available)."""
        return all(b.causal for b in self.blocks)

    def n_params(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _param(self) -> Tensor:
        return self.norm.weight

    # -- input checks ----------------------------------------------------------------------------
    def _check(self, inputs: Tensor, mask: Tensor | None, *, step: bool = False) -> None:
        c = self.config
        shape = "(B,)" if step else "(B, T)"
        if not isinstance(inputs, Tensor):
            raise TypeError(f"SequenceModel: inputs must be a torch.Tensor, got {type(inputs).__name__}")
        rank = 1 if step else 2
        if c.input_kind == "tokens":
            if inputs.dtype != torch.int64:
                raise TypeError(
                    f"SequenceModel: inputs must be int64 token ids {shape}, got dtype {inputs.dtype}"
                )
            if inputs.dim() != rank:
                raise ValueError(
                    f"SequenceModel: inputs must be token ids {shape}, got shape {tuple(inputs.shape)}"
                )
        else:
            fshape = "(B, F)" if step else "(B, T, F)"
            if not inputs.is_floating_point():
                raise TypeError(
                    f"SequenceModel: inputs must be float features {fshape}, got dtype {inputs.dtype}"
                )
            if inputs.dim() != rank + 1 or inputs.shape[-1] != c.n_features:
                raise ValueError(
                    f"SequenceModel: inputs must be features {fshape} with F = n_features = {c.n_features}, "
                    f"got shape {tuple(inputs.shape)}"
                )
        if not step and inputs.shape[1] < 1:
            raise ValueError("SequenceModel: inputs must have at least one position (T >= 1)")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"SequenceModel: mask must be a bool tensor {shape} (True = real position)")
            if tuple(mask.shape) != tuple(inputs.shape[:rank]):
                raise ValueError(
                    f"SequenceModel: mask has shape {tuple(mask.shape)}, expected {shape} = {tuple(inputs.shape[:rank])}"
                )
        real = inputs if mask is None else inputs[mask]
        if c.input_kind == "tokens":
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= c.vocab_size):
                raise ValueError(
                    f"SequenceModel: token ids must lie in [0, vocab_size={c.vocab_size}) at real positions, "
                    f"got range [{int(real.min())}, {int(real.max())}]"
                )
        elif not bool(torch.isfinite(real).all()):
            raise ValueError("SequenceModel: input features contain NaN or inf at real positions")

    def _embed(self, inputs: Tensor, mask: Tensor | None) -> Tensor:
        if self.config.input_kind == "tokens":
            ids = inputs if mask is None else torch.where(mask, inputs, torch.zeros_like(inputs))
            x = self.embed(ids)
        else:
            x = inputs.to(self._param().dtype)
            if mask is not None:
                x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            x = self.embed(x)
        x = self.embed_dropout(x)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        return x

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        inputs: Tensor,
        mask: Tensor | None = None,
        *,
        state: list[Any] | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, list[Any]]:
        """Logits: (B, n_outputs) for ``classify``, (B, T, n_outputs) for ``tagging`` and ``lm``.

        With ``state`` (from :meth:`init_state`) and/or ``return_state=True`` the recurrent state after
        the sequence is returned too (``(logits, state)``), for prefilling before :meth:`step`.
        """
        self._check(inputs, mask)
        stateful = state is not None or return_state
        if stateful:
            if not self.causal:
                raise ValueError("SequenceModel: recurrent state needs every mixer to be causal")
            if state is None:
                state = self.init_state(inputs.shape[0], device=inputs.device)
            if len(state) != len(self.blocks):
                raise ValueError(
                    f"SequenceModel: state has {len(state)} entries, expected one per layer ({len(self.blocks)})"
                )
        keep = None if mask is None else mask[..., None]
        x = self._embed(inputs, mask)
        new_state = []
        for i, block in enumerate(self.blocks):
            if stateful:
                x, s = block(x, mask=mask, state=state[i], return_state=True)
                new_state.append(s)
            else:
                x = block(x, mask=mask)
            if keep is not None:
                x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        logits = self._head(self.norm(x), mask)
        return (logits, new_state) if return_state else logits

    def _head(self, h: Tensor, mask: Tensor | None) -> Tensor:
        c = self.config
        if c.head != "classify":
            return self.head(h)
        B, T, _ = h.shape
        if c.pooling == "mean":
            if mask is None:
                pooled = h.mean(1)
            else:
                m = mask[..., None].to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            if mask is None:
                pooled = h[:, -1]
            else:
                # index of the last real position of each row (padding may sit anywhere)
                pos = torch.arange(T, device=h.device).expand(B, T)
                last = torch.where(mask, pos, torch.full_like(pos, -1)).amax(1)
                if bool((last < 0).any()):
                    raise ValueError("SequenceModel: a row of mask has no real position to classify from")
                pooled = h[torch.arange(B, device=h.device), last]
        return self.head(pooled)

    # -- recurrent interface ---------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> list[Any]:
        """Per-layer initial recurrent states (needs every mixer to be causal)."""
        if not self.causal:
            raise ValueError("SequenceModel.init_state: every mixer must be causal")
        p = self._param()
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        return [b.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks]

    def step(self, inputs_t: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """One position: token ids (B,) or features (B, F) -> (logits (B, n_outputs), new state).

        Equals the logits of :meth:`forward` at that position (``classify`` with ``pooling="last"``
        gives the logits as if the sequence ended there).
        """
        if not self.causal:
            raise ValueError("SequenceModel.step: every mixer must be causal")
        if self.config.head == "classify" and self.config.pooling != "last":
            raise ValueError("SequenceModel.step: a classify head with pooling='mean' has no per-step output")
        self._check(inputs_t, None, step=True)
        if len(state) != len(self.blocks):
            raise ValueError(
                f"SequenceModel.step: state has {len(state)} entries, expected {len(self.blocks)}"
            )
        x = self._embed(inputs_t, None)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            new_state.append(s)
        return self.head(self.norm(x)), new_state

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        *,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample ``max_new_tokens`` tokens after ``prompt`` (B, T0) int64 with an ``lm`` head.

        Prefills the state with ``forward(prompt, state=..., return_state=True)`` then calls
        :meth:`step` once per new token. ``temperature=0`` is greedy (argmax); ``top_k`` keeps the k
        largest logits. Returns the tokens (B, T0 + max_new_tokens), and with ``return_logits`` also
        the logits each new token was drawn from (B, max_new_tokens, vocab).
        """
        c = self.config
        if c.head != "lm":
            raise ValueError(f"SequenceModel.generate needs head='lm', got {c.head!r}")
        if not self.causal:
            raise ValueError("SequenceModel.generate needs every mixer to be causal")
        if c.n_outputs > c.vocab_size:
            raise ValueError(f"SequenceModel.generate: n_outputs={c.n_outputs} > vocab_size={c.vocab_size}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(
                f"SequenceModel.generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}"
            )
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"SequenceModel.generate: temperature must be >= 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"SequenceModel.generate: top_k must be a positive int or None, got {top_k!r}")
        was_training = self.training
        self.eval()
        try:
            B = prompt.shape[0] if isinstance(prompt, Tensor) and prompt.dim() >= 1 else 0
            state = self.init_state(B, device=prompt.device) if isinstance(prompt, Tensor) else None
            logits, state = self.forward(prompt, state=state, return_state=True)
            last = logits[:, -1]
            tokens, drawn = [prompt], []
            for i in range(max_new_tokens):
                drawn.append(last)
                tok = self._sample(last, temperature, top_k, generator)
                tokens.append(tok[:, None])
                if i + 1 < max_new_tokens:
                    last, state = self.step(tok, state)
        finally:
            self.train(was_training)
        out = torch.cat(tokens, 1)
        if return_logits:
            lg = torch.stack(drawn, 1) if drawn else logits.new_zeros(B, 0, c.n_outputs)
            return out, lg
        return out

    @staticmethod
    def _sample(
        logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> Tensor:
        if temperature == 0:
            return logits.argmax(-1)
        z = logits.float() / temperature
        if top_k is not None and top_k < z.shape[-1]:
            kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        probs = F.softmax(z, dim=-1)
        if generator is not None and generator.device != probs.device:
            probs = probs.to(generator.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)
