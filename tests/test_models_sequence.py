"""SequenceModel: heads and shapes, padding invariance, step/generate vs forward, input errors, blocks."""

from __future__ import annotations

import pytest
import torch

import recurrences.train.testing  # noqa: F401  (registers the toy mixers and task)
from recurrences.layers import available_mixers
from recurrences.models import GatedMLP, ModelConfig, ResidualBlock, RMSNorm, SequenceModel


def _model(head="classify", kind="tokens", mixer="_toy-ema", pooling="last", **kw) -> SequenceModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        mixer=mixer,
        d_model=16,
        n_layers=kw.pop("n_layers", 2),
        n_heads=2,
        input_kind=kind,
        vocab_size=9 if kind == "tokens" else None,
        n_features=3 if kind == "features" else None,
        head=head,
        n_outputs=None if head == "lm" else 5,
        pooling=pooling,
        **kw,
    )
    return SequenceModel(cfg).double()


def _inputs(kind, B=3, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind == "tokens":
        return torch.randint(0, 9, (B, T), generator=g)
    return torch.randn(B, T, 3, generator=g, dtype=torch.float64)


def test_rmsnorm_and_mlp():
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    n = RMSNorm(8, eps=1e-6).double()
    with torch.no_grad():
        n.weight.copy_(torch.linspace(0.5, 2, 8))
    ref = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * n.weight
    torch.testing.assert_close(n(x), ref)
    mlp = GatedMLP(8, 12).double()
    ref = mlp.down(torch.nn.functional.silu(mlp.gate(x)) * mlp.up(x))
    torch.testing.assert_close(mlp(x), ref)


def test_residual_block_is_pre_norm():
    from recurrences.layers import create_mixer

    mixer = create_mixer("_toy-ema", d_model=8).double()
    block = ResidualBlock(mixer, GatedMLP(8, 16).double(), 8).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    h = x + mixer(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.norm2(h)))
    no_mlp = ResidualBlock(mixer, None, 8).double()
    torch.testing.assert_close(no_mlp(x), x + mixer(no_mlp.norm1(x)))


@pytest.mark.parametrize(
    "head, kind, pooling, shape",
    [
        ("classify", "tokens", "last", (3, 5)),
        ("classify", "features", "mean", (3, 5)),
        ("tagging", "tokens", "last", (3, 7, 5)),
        ("tagging", "features", "last", (3, 7, 5)),
        ("lm", "tokens", "last", (3, 7, 9)),
    ],
)
def test_head_shapes(head, kind, pooling, shape):
    m = _model(head, kind, pooling=pooling)
    assert m(_inputs(kind)).shape == shape


def _pool_reference(m, x, lengths, pooling):
    """Each row run alone at its true length (no padding at all)."""
    outs = []
    for b, n in enumerate(lengths):
        outs.append(m(x[b : b + 1, :n]))
    return outs


@pytest.mark.parametrize("kind", ["tokens", "features"])
@pytest.mark.parametrize("head, pooling", [("classify", "last"), ("classify", "mean"), ("tagging", "last")])
@pytest.mark.parametrize("mixer", ["_toy-ema", "_toy-bimean|_toy-ema"])
def test_padding_never_reaches_real_outputs(kind, head, pooling, mixer):
    m = _model(head, kind, mixer=mixer, pooling=pooling)
    lengths = [7, 1, 4]
    x = _inputs(kind)
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    garbage = x.clone()
    if kind == "tokens":
        garbage[~mask] = torch.randint(0, 9, (int((~mask).sum()),))
        garbage[1, 3] = 10_000  # even out-of-range ids at padded positions are ignored
    else:
        garbage[~mask] = 1e6
        garbage[1, 3, 0] = float("nan")
    y1, y2 = m(x, mask), m(garbage, mask)
    if head == "classify":
        torch.testing.assert_close(y1, y2)
    else:
        torch.testing.assert_close(y1[mask], y2[mask])
    # and padded rows equal the same rows run alone without padding
    alone = _pool_reference(m, x, lengths, pooling)
    for b, n in enumerate(lengths):
        if head == "classify":
            torch.testing.assert_close(y1[b], alone[b][0])
        else:
            torch.testing.assert_close(y1[b, :n], alone[b][0])


@pytest.mark.parametrize("T", [1, 7])
def test_step_equals_forward(T):
    for head, kind in [("lm", "tokens"), ("tagging", "features"), ("classify", "tokens")]:
        m = _model(head, kind, mlp_ratio=1.0)
        x = _inputs(kind, T=T)
        full = m(x)
        state = m.init_state(3)
        for t in range(T):
            y, state = m.step(x[:, t], state)
            if head == "classify":
                torch.testing.assert_close(y, m(x[:, : t + 1]))
            else:
                torch.testing.assert_close(y, full[:, t])


def test_prefill_then_step_equals_forward():
    m = _model("lm", "tokens")
    x = _inputs("tokens", T=9)
    full = m(x)
    logits, state = m(x[:, :4], state=m.init_state(3), return_state=True)
    torch.testing.assert_close(logits, full[:, :4])
    for t in range(4, 9):
        y, state = m.step(x[:, t], state)
        torch.testing.assert_close(y, full[:, t])


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (0.7, 3)])
def test_generate_logits_equal_full_forward(temperature, top_k):
    m = _model("lm", "tokens", tie_embeddings=True)
    prompt = _inputs("tokens", B=2, T=5)
    g = torch.Generator().manual_seed(3)
    out, logits = m.generate(prompt, 6, temperature=temperature, top_k=top_k, generator=g, return_logits=True)
    assert out.shape == (2, 11) and logits.shape == (2, 6, 9)
    assert torch.equal(out[:, :5], prompt)
    full = m(out[:, :-1])
    torch.testing.assert_close(logits, full[:, 4:])
    if temperature == 0:
        assert torch.equal(out[:, 5:], logits.argmax(-1))
    if top_k is not None:  # every drawn token is among the top k of its logits
        top = logits.topk(top_k, dim=-1).indices
        assert bool((top == out[:, 5:, None]).any(-1).all())
    # same generator seed, same tokens
    again = m.generate(
        prompt, 6, temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(out, again)


def test_generate_and_state_errors():
    m = _model("lm", "tokens")
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate(_inputs("tokens"), -1)
    with pytest.raises(ValueError, match="top_k"):
        m.generate(_inputs("tokens"), 2, top_k=0)
    assert m.generate(_inputs("tokens"), 0).shape == (3, 7)
    with pytest.raises(ValueError, match="head='lm'"):
        _model("tagging", "tokens").generate(_inputs("tokens"), 2)
    bi = _model("tagging", "tokens", mixer="_toy-bimean")
    assert not bi.causal and _model("lm").causal
    with pytest.raises(ValueError, match="causal"):
        bi.init_state(2)
    with pytest.raises(ValueError, match="causal"):
        bi(_inputs("tokens"), return_state=True)
    with pytest.raises(ValueError, match="pooling='mean'"):
        m2 = _model("classify", "tokens", pooling="mean")
        m2.step(_inputs("tokens")[:, 0], m2.init_state(3))


def test_input_errors():
    m = _model("classify", "tokens")
    x = _inputs("tokens")
    with pytest.raises(TypeError, match="int64"):
        m(x.int())
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(x[0])
    with pytest.raises(ValueError, match="vocab_size=9"):
        m(x + 9)
    with pytest.raises(TypeError, match="mask must be a bool"):
        m(x, torch.ones(3, 7))
    with pytest.raises(ValueError, match="mask has shape"):
        m(x, torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="no real position"):
        m(x, torch.zeros(3, 7, dtype=torch.bool))
    f = _model("classify", "features")
    with pytest.raises(TypeError, match="float features"):
        f(_inputs("tokens"))
    with pytest.raises(ValueError, match="n_features = 3"):
        f(torch.randn(3, 7, 4, dtype=torch.float64))
    bad = _inputs("features")
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        f(bad)


def test_n_params_counts_tied_weights_once():
    untied = _model("lm", "tokens")
    tied = _model("lm", "tokens", tie_embeddings=True)
    assert tied.head.weight is tied.embed.weight
    assert untied.n_params() - tied.n_params() == 9 * 16
    assert tied.n_params() == sum(p.numel() for p in tied.parameters())
    no_mlp = _model("lm", "tokens", mlp_ratio=0)
    assert no_mlp.n_params() < untied.n_params() and no_mlp.blocks[0].mlp is None


def test_hybrid_pattern_builds_layers_in_order():
    m = _model("tagging", "tokens", mixer="_toy-ema|_toy-bimean", n_layers=3)
    names = [type(b.mixer).__name__ for b in m.blocks]
    assert names == ["ToyEMA", "ToyBiMean", "ToyEMA"]
    assert not m.causal


def test_gradients_flow_to_every_parameter():
    m = _model("classify", "tokens", mixer="_toy-ema|_toy-bimean")
    x = _inputs("tokens")
    m(x).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def _real_causal() -> list[str]:
    try:  # another worker's mixer module failing to import must not break collection here
        return [n for n in available_mixers(causal=True) if not n.startswith("_")]
    except Exception:
        return []


@pytest.mark.parametrize("name", _real_causal())
def test_real_causal_mixers_generate_like_forward(name):
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=name, d_model=16, n_layers=2, n_heads=2, vocab_size=9, head="lm")
    m = SequenceModel(cfg).double()
    prompt = _inputs("tokens", B=2, T=5)
    out, logits = m.generate(prompt, 4, temperature=0.0, return_logits=True)
    torch.testing.assert_close(logits, m(out[:, :-1])[:, 4:])


def _registered() -> list[str]:
    try:  # another worker's mixer module failing to import must not break collection here
        return [n for n in available_mixers() if not n.startswith("_")]
    except Exception:
        return []


@pytest.mark.parametrize("name", _registered())
def test_every_registered_mixer_in_a_model_ignores_padding(name):
    """Model level: a right-padded batch gives each row the outputs it has when run alone."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        mixer=name, d_model=16, n_layers=2, n_heads=2, vocab_size=9, head="tagging", n_outputs=3
    )
    m = SequenceModel(cfg).double().eval()
    lengths = [7, 2, 5]
    x = _inputs("tokens", T=7)
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    y = m(x, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(y[b, :n], m(x[b : b + 1, :n])[0])
