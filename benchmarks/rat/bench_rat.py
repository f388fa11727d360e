"""RAT benchmarks: training-step time, generation latency, bits per character on tinyshakespeare.

    python benchmarks/rat/bench_rat.py train     # forward+backward time vs T, RAT(L=16) against attention
    python benchmarks/rat/bench_rat.py generate  # per-token decode latency and cache size at positions 1k/4k/16k
    python benchmarks/rat/bench_rat.py lm        # small char-LMs (RAT, RAT-SWA, attention, ...) for N steps
    python benchmarks/rat/bench_rat.py plot      # PNGs from the JSON files

Every ratio is against a baseline measured in the same run, interleaved with the RAT measurement (the
machine is shared, so absolute times drift; ratios much less). Results go to benchmarks/rat/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recurrences.layers import create_mixer

RESULTS = Path(__file__).resolve().parent / "results"


def env_info() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


# -- training step -------------------------------------------------------------------------------------
def train_step_time(m: torch.nn.Module, x: torch.Tensor) -> float:
    m.zero_grad(set_to_none=True)
    xx = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    y = m(xx)
    y.pow(2).mean().backward()
    return time.perf_counter() - t0


def cmd_train(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    D, H = args.d_model, args.n_heads
    makers = {
        f"rat(L={args.chunk_size})": lambda: create_mixer(
            "rat", d_model=D, n_heads=H, chunk_size=args.chunk_size
        ),
        "attention": lambda: create_mixer("attention", d_model=D, n_heads=H),
    }
    mods = {k: f() for k, f in makers.items()}
    rows = []
    history: dict[str, list[tuple[int, float]]] = {k: [] for k in mods}
    for T in args.lengths:
        x = torch.randn(args.batch, T, D)
        row: dict = {"T": T}
        for name in mods:
            est = estimate(history[name], T)
            if est is not None and est > args.max_seconds:
                row[name] = {"skipped": f"estimated {est:.0f} s > {args.max_seconds:.0f} s"}
                print(f"T={T:6d} {name:12s} skipped (estimated {est:.0f} s)")
                continue
            row[name] = {"times": []}
        # short cells: one warm-up then ``reps`` timed runs; long cells (the layers are warm by then):
        # ``long_reps`` timed runs
        reps, warm = (args.reps, 1) if T < 16384 else (args.long_reps, 0)
        for rep in range(reps + warm):  # RAT and attention alternate, so load drifts hit both alike
            for name, m in mods.items():
                if "times" not in row[name]:
                    continue
                t = train_step_time(m, x)
                if rep >= warm:
                    row[name]["times"].append(t)
                print(f"T={T:6d} {name:12s} rep {rep}: {t:8.3f} s", flush=True)
        for name in mods:
            if "times" in row[name]:
                row[name]["seconds"] = statistics.median(row[name]["times"])
                history[name].append((T, row[name]["seconds"]))
        a, r = row["attention"], row[f"rat(L={args.chunk_size})"]
        if "seconds" in a and "seconds" in r:
            # paired: each attention run against the RAT run just before it (same load), then the median
            row["paired_ratios"] = [ta / tr for ta, tr in zip(a["times"], r["times"])]
            row["speedup"] = statistics.median(row["paired_ratios"])
            print(f"T={T:6d} speedup attention/RAT = {row['speedup']:.2f}x (median of paired runs)")
        rows.append(row)
        save(args.out, {"env": env_info(), "config": vars_of(args), "rows": rows})


def estimate(history: list[tuple[int, float]], T: int) -> float | None:
    """Extrapolate a*T + b*T^2 from the last two measurements (None if there are fewer)."""
    if len(history) < 2:
        return None
    (t1, s1), (t2, s2) = history[-2:]
    # solve s = a t + b t^2 through both points; clamp to non-negative coefficients
    det = t1 * t2 * t2 - t2 * t1 * t1
    b = max(0.0, (t1 * s2 - t2 * s1) / det)
    a = max(0.0, (s1 - b * t1 * t1) / t1)
    return a * T + b * T * T


def vars_of(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


# -- generation ----------------------------------------------------------------------------------------
class PreallocatedKV:
    """Best-case attention decoding: the ``attention`` mixer's weights, a preallocated KV buffer, SDPA."""

    def __init__(self, attn, B: int, capacity: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.attn = attn
        H, d = attn.n_heads, attn.head_dim
        self.k = torch.zeros(B, H, capacity, d)
        self.v = torch.zeros(B, H, capacity, d)
        n = k.shape[1]
        self.k[:, :, :n] = k.transpose(1, 2)
        self.v[:, :, :n] = v.transpose(1, 2)
        self.n = n

    @torch.no_grad()
    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        from recurrences.layers._rope import apply_rope

        a = self.attn
        B = x_t.shape[0]
        H, d = a.n_heads, a.head_dim
        q, k, v = a.qkv(x_t).view(B, 1, 3, H, d).unbind(2)
        pos = torch.tensor([self.n])
        q, k = apply_rope(q, pos, base=a.rope_base), apply_rope(k, pos, base=a.rope_base)
        self.k[:, :, self.n] = k[:, 0]
        self.v[:, :, self.n] = v[:, 0]
        self.n += 1
        o = F.scaled_dot_product_attention(q.transpose(1, 2), self.k[:, :, : self.n], self.v[:, :, : self.n])
        return a.out(o.transpose(1, 2).reshape(B, a.d_model))


def time_steps(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@torch.no_grad()
def cmd_generate(args: argparse.Namespace) -> None:
    """Per-token latency after prefilling to each position.

    The decoders take turns in rounds: in each round each one makes ``block`` consecutive steps. They are
    RAT with its default step (``step_method="auto"``: the compiled kernel at batch <= 8 when numba is
    installed; ``--rat-step`` picks another), RAT
    with the eager step, the ``attention`` mixer's KV-cache step, and, with ``--preallocated``, a
    hand-made preallocated KV buffer with SDPA. With ``block`` 1 (the default) every step directly follows
    another decoder's step, so it starts with caches full of the other decoders' data (attention streams
    its whole KV cache every step); with ``block`` > 1 the first step of each turn is not timed, so the
    timed steps run in the decoder's own steady state, as when one model generates. Either way load
    drifts hit all alike.
    """
    torch.manual_seed(0)
    D, H, B, blk = args.d_model, args.n_heads, args.batch, args.block
    rat = create_mixer("rat", d_model=D, n_heads=H, chunk_size=args.chunk_size).eval()
    attn = create_mixer("attention", d_model=D, n_heads=H).eval()
    rat.step_method = args.rat_step
    resolved = "compiled" if rat._step_kernel(torch.zeros(B, D)) is not None else "eager"
    rows = []
    for P in args.positions:
        prompt = torch.randn(B, P, D)
        _, s_rat = rat(prompt, return_state=True)
        _, s_att = attn(prompt, return_state=True)
        n_x = 4 * (args.steps * blk + 2)
        xs = torch.randn(n_x, B, D)
        it = iter(range(len(xs)))
        holder = {"rat": s_rat, "rat_eager": s_rat.clone(), "att": s_att}

        def rat_step(holder=holder, xs=xs, it=it):
            rat.step_method = args.rat_step
            holder["rat"] = rat.step(xs[next(it)], holder["rat"])[1]

        def rat_eager_step(holder=holder, xs=xs, it=it):
            rat.step_method = "eager"
            holder["rat_eager"] = rat.step(xs[next(it)], holder["rat_eager"])[1]

        def att_step(holder=holder, xs=xs, it=it):
            holder["att"] = attn.step(xs[next(it)], holder["att"])[1]

        fns = {"rat": rat_step, "rat (eager step)": rat_eager_step, "attention (mixer step)": att_step}
        if args.preallocated:
            best = PreallocatedKV(attn, B, P + n_x, s_att.k, s_att.v)
            fns["attention (preallocated KV)"] = lambda best=best, xs=xs, it=it: best.step(xs[next(it)])
        for f in fns.values():  # warm-up (and the kernel's compilation, or its load from numba's cache)
            f()
        t = {k: [] for k in fns}
        for _ in range(args.steps):  # rounds: each decoder takes a turn of ``blk`` steps
            for name, f in fns.items():
                for j in range(blk):
                    dt = time_steps(f, 1)
                    if blk == 1 or j > 0:
                        t[name].append(dt)
        med = {k: statistics.median(v) for k, v in t.items()}
        s, a = holder["rat"], holder["att"]
        assert s.pos == a.pos, "both caches must hold the same number of tokens"
        cache_rat = s.cache_numel()  # finished-chunk keys/values + the running state
        cache_att = a.k.numel() + a.v.numel()
        row = {
            "position": P,
            "cache_tokens": s.pos,
            "rat_step_method": resolved,
            "ms_per_token": {k: 1e3 * v for k, v in med.items()},
            "speedup_vs_mixer_step": med["attention (mixer step)"] / med["rat"],
            "speedup_eager_vs_mixer_step": med["attention (mixer step)"] / med["rat (eager step)"],
            "cache_numbers": {"rat": cache_rat, "attention": cache_att},
            "cache_ratio": cache_att / cache_rat,
            "load_average": os.getloadavg()[0],
        }
        if args.preallocated:
            row["speedup_vs_preallocated"] = med["attention (preallocated KV)"] / med["rat"]
        print(json.dumps(row))
        rows.append(row)
        save(args.out, {"env": env_info(), "config": vars_of(args), "rows": rows})


# -- char LM on tinyshakespeare -----------------------------------------------------------------------
def cmd_lm(args: argparse.Namespace) -> None:
    from recurrences.models import ModelConfig, SequenceModel

    text = Path(args.data).read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_train = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    T = args.seq_len
    # fixed evaluation windows over the validation text
    n_eval = min(args.eval_windows, (len(val_ids) - 1) // T)
    starts = torch.linspace(0, len(val_ids) - T - 1, n_eval).long()
    val_x = torch.stack([val_ids[s : s + T] for s in starts])
    val_y = torch.stack([val_ids[s + 1 : s + T + 1] for s in starts])

    models = {
        "rat": ("rat", {"rat": {"chunk_size": args.chunk_size}}),
        "rat-swa": ("rat|swa", {"rat": {"chunk_size": args.chunk_size}, "swa": {"window": args.window}}),
        "attention": ("attention", {}),
        "attention-swa": ("attention|swa", {"swa": {"window": args.window}}),
        "swa": ("swa", {"swa": {"window": args.window}}),
        # attention with a wider MLP, so that its parameter count matches RAT's (RAT's layer has
        # D(3D + 2 G d) + D^2 + D parameters against 4 D^2 for attention)
        "attention-matched": ("attention", {}),
    }
    rat_extra = args.d_model * 2 * min(2, args.n_heads) * (args.d_model // args.n_heads) + args.d_model
    matched_ratio = (round(2.0 * args.d_model) + round(rat_extra / (3 * args.d_model))) / args.d_model
    results = {}
    out_path = RESULTS / "lm.json"
    if out_path.exists() and not args.fresh:
        results = json.loads(out_path.read_text()).get("models", {})
    for name in args.models:
        if name in results and results[name].get("steps") == args.steps:
            print(f"{name}: already done ({results[name]['val_bpc']:.3f} bpc)")
            continue
        mixer, opts = models[name]
        torch.manual_seed(args.seed)
        cfg = ModelConfig(
            mixer=mixer,
            mixer_options=opts,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            vocab_size=len(chars),
            head="lm",
            mlp_ratio=matched_ratio if name == "attention-matched" else 2.0,
        )
        model = SequenceModel(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
        g = torch.Generator().manual_seed(args.seed)  # same batches for every model
        curve = []
        t0 = time.perf_counter()
        for step in range(args.steps):
            lr = args.lr * min(1.0, (step + 1) / args.warmup)
            lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))
            for pg in opt.param_groups:
                pg["lr"] = lr
            idx = torch.randint(0, len(train_ids) - T - 1, (args.batch,), generator=g)
            x = torch.stack([train_ids[i : i + T] for i in idx])
            y = torch.stack([train_ids[i + 1 : i + T + 1] for i in idx])
            model.train()
            loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                bpc = evaluate_bpc(model, val_x, val_y, len(chars))
                curve.append({"step": step + 1, "train_bpc": loss.item() / math.log(2), "val_bpc": bpc})
                print(
                    f"{name:14s} step {step + 1:4d}  train {loss.item() / math.log(2):.3f}  val {bpc:.3f} bpc",
                    flush=True,
                )
        results[name] = {
            "mixer": mixer,
            "mixer_options": opts,
            "n_params": n_params,
            "mlp_ratio": cfg.mlp_ratio,
            "steps": args.steps,
            "val_bpc": curve[-1]["val_bpc"],
            "curve": curve,
            "train_seconds": time.perf_counter() - t0,
        }
        save("lm", {"env": env_info(), "config": vars_of(args), "models": results})


@torch.no_grad()
def evaluate_bpc(model, val_x: torch.Tensor, val_y: torch.Tensor, V: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(val_x), 16):
        logits = model(val_x[i : i + 16])
        total += F.cross_entropy(logits.reshape(-1, V), val_y[i : i + 16].reshape(-1), reduction="sum").item()
        n += val_y[i : i + 16].numel()
    return total / n / math.log(2)


# -- plots ---------------------------------------------------------------------------------------------
def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = RESULTS / "train.json"
    if p.exists():
        d = json.loads(p.read_text())
        fig, ax = plt.subplots(figsize=(5.5, 4))
        names = [k for k in d["rows"][0] if k not in ("T", "speedup", "paired_ratios")]
        for name in names:
            pts = [(r["T"], r[name]["seconds"]) for r in d["rows"] if "seconds" in r.get(name, {})]
            if pts:
                ax.loglog(*zip(*pts), "o-", label=name)
        for r in d["rows"]:
            if "speedup" in r:
                ax.annotate(f"{r['speedup']:.1f}x", (r["T"], r["attention"]["seconds"]), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=8)  # fmt: skip
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("forward+backward time (s)")
        c = d["config"]
        ax.set_title(
            f"one layer, d_model={c['d_model']}, {c['n_heads']} heads, CPU {d['env']['threads']} thread(s)"
        )
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / "train.png", dpi=120)
        print(f"wrote {RESULTS / 'train.png'}")
    for p in sorted(RESULTS.glob("generate*.json")):
        d = json.loads(p.read_text())
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name in d["rows"][0]["ms_per_token"]:
            ax.loglog(
                [r["position"] for r in d["rows"]],
                [r["ms_per_token"][name] for r in d["rows"]],
                "o-",
                label=name,
            )
        ax.set_xlabel("position")
        ax.set_ylabel("ms per generated token (one layer)")
        c = d["config"]
        ax.set_title(f"decode latency, batch {c['batch']}, d_model={c['d_model']}")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(p.with_suffix(".png"), dpi=120)
        print(f"wrote {p.with_suffix('.png')}")
    p = RESULTS / "lm.json"
    if p.exists():
        d = json.loads(p.read_text())
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name, r in d["models"].items():
            ax.plot([c["step"] for c in r["curve"]], [c["val_bpc"] for c in r["curve"]], "o-", ms=3,
                    label=f"{name} ({r['val_bpc']:.3f})")  # fmt: skip
        ax.set_xlabel("training step")
        ax.set_ylabel("validation bits per character")
        ax.set_title("char LM on tinyshakespeare")
        ax.legend()
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / "lm.png", dpi=120)
        print(f"wrote {RESULTS / 'lm.png'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    t.add_argument("--d-model", type=int, default=256)
    t.add_argument("--n-heads", type=int, default=4)
    t.add_argument("--chunk-size", type=int, default=16)
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--max-seconds", type=float, default=60.0)
    t.add_argument("--long-reps", type=int, default=2, help="timed runs for T >= 16384 (no warm-up)")
    t.add_argument("--out", default="train", help="results/<out>.json (the plot reads results/train.json)")
    t.set_defaults(func=cmd_train)
    g = sub.add_parser("generate")
    g.add_argument("--positions", type=int, nargs="+", default=[1024, 4096, 16384])
    g.add_argument("--d-model", type=int, default=256)
    g.add_argument("--n-heads", type=int, default=4)
    g.add_argument("--chunk-size", type=int, default=16)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--steps", type=int, default=50, help="rounds (timed steps per decoder with --block 1)")
    g.add_argument(
        "--block",
        type=int,
        default=1,
        help="consecutive steps per decoder per round; >1 times the steady state (first step untimed)",
    )
    g.add_argument(
        "--preallocated", action="store_true", help="also time a hand-made preallocated KV decoder"
    )
    g.add_argument(
        "--rat-step", default="auto", choices=["auto", "eager", "compiled"], help="RAT's step_method"
    )
    g.add_argument("--out", default="generate", help="results/<out>.json")
    g.set_defaults(func=cmd_generate)
    lm = sub.add_parser("lm")
    lm.add_argument("--data", default="/work/shared/data/tinyshakespeare/input.txt")
    lm.add_argument("--models", nargs="+", default=["rat", "rat-swa", "attention"])
    lm.add_argument("--steps", type=int, default=300)
    lm.add_argument("--batch", type=int, default=16)
    lm.add_argument("--seq-len", type=int, default=256)
    lm.add_argument("--d-model", type=int, default=128)
    lm.add_argument("--n-layers", type=int, default=4)
    lm.add_argument("--n-heads", type=int, default=4)
    lm.add_argument("--chunk-size", type=int, default=16)
    lm.add_argument("--window", type=int, default=64)
    lm.add_argument("--lr", type=float, default=3e-3)
    lm.add_argument("--warmup", type=int, default=30)
    lm.add_argument("--eval-every", type=int, default=50)
    lm.add_argument("--eval-windows", type=int, default=64)
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--fresh", action="store_true", help="ignore models already in results/lm.json")
    lm.set_defaults(func=cmd_lm)
    p = sub.add_parser("plot")
    p.set_defaults(func=cmd_plot)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
