"""Train a small causal transformer three ways from the same initialisation and data, and plot the
loss curves: FlashSigmoid's attention, eager sigmoid attention (the same maths in plain PyTorch) and
PyTorch SDPA's softmax attention.

The task needs attention: each sequence is `half` random tokens followed by the same tokens again,
so the second half is predictable only by looking back (an induction/copy task). The loss on the
second half (the "copy loss") falls from log(vocab) towards 0 once the model has learned to attend;
the first half stays at log(vocab), which no model can beat.

    python examples/train_lm.py                     # GPU if there is one: 2 layers, 600 steps
    python examples/train_lm.py --device cpu --steps 200
    python examples/train_lm.py --tiny              # a few steps on CPU: the CI smoke test

Writes <out>/train_lm.png (the curves), <out>/train_lm.json (settings and every loss) and prints a
summary. Sigmoid attention uses bias -log(seqlen), the paper's recommendation
(Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid Self-Attention").
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def eager_sigmoid(q, k, v, bias):
    """[B, S, H, D] sigmoid attention, causal, in plain PyTorch."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    s = q.shape[-2]
    z = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
    mask = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    p = torch.where(mask, torch.sigmoid(z), torch.zeros((), dtype=z.dtype, device=z.device))
    return (p @ v).transpose(1, 2)


def attention_fn(kind):
    if kind == "flash_sigmoid":
        from flash_sigmoid import flash_attn_func
        return lambda q, k, v: flash_attn_func(q, k, v, causal=True, sigmoid_bias=-math.log(q.shape[1]))
    if kind == "eager_sigmoid":
        return lambda q, k, v: eager_sigmoid(q, k, v, -math.log(q.shape[1]))
    if kind == "sdpa_softmax":
        return lambda q, k, v: F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
    raise ValueError(kind)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.attend = None  # set by the model

    def forward(self, x):
        b, s, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, w // self.heads).unbind(2)
        x = x + self.proj(self.attend(q, k, v).reshape(b, s, w))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab, seqlen, width, heads, layers):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Parameter(torch.randn(seqlen, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def use(self, attend):
        for block in self.blocks:
            block.attend = attend
        return self

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def batches(args, device):
    """The same stream of copy-task batches for every model."""
    g = torch.Generator().manual_seed(args.seed + 1)
    for _ in range(args.steps):
        first = torch.randint(0, args.vocab, (args.batch, args.half), generator=g)
        yield torch.cat((first, first), dim=1).to(device)


def train(kind, base, args, device, dtype):
    model = copy.deepcopy(base).use(attention_fn(kind)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    losses, copy_losses = [], []
    t0 = time.time()
    for tokens in batches(args, device):
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(tokens[:, :-1])
        per_token = F.cross_entropy(logits.float().reshape(-1, args.vocab), tokens[:, 1:].reshape(-1),
                                    reduction="none").view(args.batch, -1)
        loss = per_token.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        copy_losses.append(per_token[:, args.half:].mean().item())  # targets of the repeated half
    return dict(loss=losses, copy_loss=copy_losses, seconds=time.time() - t0)


def plot(results, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    styles = {"flash_sigmoid": dict(linestyle="--", linewidth=1.6, zorder=3)}  # drawn over eager_sigmoid's
    for kind, r in results.items():
        ax.plot(r["copy_loss"], label=kind, **styles.get(kind, dict(linewidth=1.2)))
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss on the repeated half (nats)")
    ax.set_title(f"copy task: {args.layers} layers, width {args.width}, {args.heads} heads, S {2 * args.half}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bf16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--half", type=int, default=64, help="random tokens per sequence (then repeated)")
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="+", default=["flash_sigmoid", "eager_sigmoid", "sdpa_softmax"])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: 12 steps of a tiny model")
    ap.add_argument("--out", default="out")
    args = ap.parse_args(argv)
    if args.tiny:
        args.device, args.steps, args.batch, args.half, args.width, args.layers = "cpu", 12, 8, 16, 32, 1
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    base = TinyLM(args.vocab, 2 * args.half, args.width, args.heads, args.layers)
    results = {kind: train(kind, base, args, device, dtype) for kind in args.kinds}
    os.makedirs(args.out, exist_ok=True)
    plot(results, args, os.path.join(args.out, "train_lm.png"))
    settings = {k: v for k, v in vars(args).items()}
    settings.update(dtype=str(dtype), torch=torch.__version__,
                    gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
    with open(os.path.join(args.out, "train_lm.json"), "w") as f:
        json.dump(dict(settings=settings, results=results), f)
    print(f"{'attention':<15} {'first loss':>10} {'final loss':>10} {'final copy loss':>15} {'seconds':>8}")
    for kind, r in results.items():
        tail = r["copy_loss"][-max(1, len(r["copy_loss"]) // 20):]
        print(f"{kind:<15} {r['loss'][0]:>10.3f} {r['loss'][-1]:>10.3f} {sum(tail) / len(tail):>15.3f} "
              f"{r['seconds']:>8.1f}")
    return results


if __name__ == "__main__":
    main()
