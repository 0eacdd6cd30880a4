"""GPT ICL training throughput: mesaopt's GPT vs the same architecture on Hugging Face ``transformers.GPT2Model``.

Garg et al.'s standard shape (d=20, 41 points -> 82 tokens, 12 layers, 8 heads, width 256, batch 64, prefix
objective). Both models get the same linear read-in (d+1 -> width) and read-out (width -> 1) and the same
AdamW step; steps/s are measured round-robin in the same process. Also measured in the same run: mesaopt with
bf16 autocast (fp32 master weights), the fp32/bf16 matmul peaks, the achieved GFLOP/s of each variant, a
profile of where a mesaopt step spends its time, and a short fp32-vs-bf16 loss curve on a small GPT.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmarks.common import compare, count_flops, matmul_peaks, out_dir

FULL = {"d": 20, "points": 41, "layers": 12, "heads": 8, "width": 256, "batch": 64, "repeats": 2,
        "bf16_repeats": 1, "curve": {"layers": 2, "heads": 2, "width": 64, "batch": 32, "steps": 100, "lr": 1e-3},
        "profile_top": 8}
QUICK = {"d": 5, "points": 11, "layers": 2, "heads": 2, "width": 32, "batch": 8, "repeats": 1,
         "bf16_repeats": 1, "curve": {"layers": 1, "heads": 2, "width": 16, "batch": 16, "steps": 5, "lr": 1e-3},
         "profile_top": 5}


class HFGPT(nn.Module):
    """Garg-style model on ``transformers.GPT2Model``: read-in -> GPT2Model(inputs_embeds) -> read-out."""

    def __init__(self, d: int, points: int, layers: int, heads: int, width: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(vocab_size=1, n_positions=2 * points, n_embd=width, n_layer=layers, n_head=heads,
                         bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         use_cache=False)
        torch.manual_seed(0)
        self.read_in = nn.Linear(d + 1, width)
        self.backbone = GPT2Model(cfg)
        self.read_out = nn.Linear(width, 1)

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, T, d), (B, T) -> (B, T): read-out at the x-token positions."""
        from mesaopt.models.tokens import interleave

        h = self.backbone(inputs_embeds=self.read_in(interleave(xs, ys))).last_hidden_state
        return self.read_out(h[:, 0::2]).squeeze(-1)


def _mesaopt_gpt(d: int, points: int, layers: int, heads: int, width: int, seed: int = 0):
    from mesaopt.models.gpt import GPT

    return GPT(d=d, n_positions=points, layers=layers, heads=heads, width=width, seed=seed)


def make_step(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, amp: str | None = None, lr: float = 1e-4):
    """A closure doing one AdamW training step of the prefix objective (bf16 autocast if ``amp='bf16'``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def step() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            pred = model.prefix(xs, ys)
        loss = (pred.float() - ys).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def profile_step(step, top: int) -> list[dict]:
    """Share of self CPU time of the ``top`` most expensive ops in one step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev)
    ev.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    matmul = sum(e.self_cpu_time_total for e in ev if any(k in e.key for k in ("mm", "addmm", "bmm", "linear",
                                                                               "matmul", "attention")))
    rows = [{"op": e.key, "self_share": round(e.self_cpu_time_total / total, 3)} for e in ev[:top]]
    rows.append({"op": "(all matmul/attention kernels)", "self_share": round(matmul / total, 3)})
    return rows


def loss_curves(cfg: dict, d: int, points: int) -> dict:
    """fp32 vs bf16-autocast training of the same small GPT on the same batches: both loss curves."""
    import mesaopt as mo

    task = mo.tasks.LinearRegression(d=d)
    curves = {}
    for amp in (None, "bf16"):
        model = _mesaopt_gpt(d, points, cfg["layers"], cfg["heads"], cfg["width"], seed=1)
        g = torch.Generator().manual_seed(3)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
        losses = []
        for _ in range(cfg["steps"]):
            b = task.sample(cfg["batch"], points, g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                pred = model.prefix(b.xs, b.ys)
            loss = (pred.float() - b.ys).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach().item())
        curves[amp or "fp32"] = losses
    k = max(1, len(curves["fp32"]) // 10)
    tail = {name: sum(v[-k:]) / k for name, v in curves.items()}
    return {"shape": cfg, "fp32": curves["fp32"], "bf16": curves["bf16"], "fp32_last10pct_mean": tail["fp32"],
            "bf16_last10pct_mean": tail["bf16"], "rel_diff_last10pct": abs(tail["bf16"] - tail["fp32"]) / tail["fp32"]}


def run(quick: bool = False, out: str | Path | None = None, peaks: dict | None = None, plot: bool = True) -> dict:
    """Steps/s of mesaopt GPT (fp32, bf16 autocast) vs HF GPT2Model at the Garg shape; returns the JSON dict."""
    cfg = QUICK if quick else FULL
    d, points, b = cfg["d"], cfg["points"], cfg["batch"]
    shape = dict(d=d, points=points, layers=cfg["layers"], heads=cfg["heads"], width=cfg["width"])
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(b, points, d, generator=g), torch.randn(b, points, generator=g)
    if peaks is None:
        peaks = matmul_peaks(n=256 if quick else 1024, budget_s=1.0 if quick else 20.0)
    # A CPU without native bf16 dot products (AVX2-only: bf16 matmul measured far below fp32) emulates bf16 at a
    # fraction of a GFLOP/s; a full-batch bf16 step would then take minutes. Time it on batch/8 and scale the time
    # linearly in the batch (the step is matmul-bound), so `make bench` stays within its 15-minute budget.
    emulated = peaks["bfloat16_gflops"] < 0.5 * peaks["float32_gflops"]
    b16 = max(1, b // 8) if emulated and not quick else b
    hf, mo_fp32, mo_bf16 = HFGPT(**shape), _mesaopt_gpt(**shape), _mesaopt_gpt(**shape)
    n_hf = sum(p.numel() for p in hf.parameters())
    n_mo = sum(p.numel() for p in mo_fp32.parameters())
    steps = {"hf_fp32": make_step(hf, xs, ys), "mesaopt_fp32": make_step(mo_fp32, xs, ys),
             "mesaopt_bf16": make_step(mo_bf16, xs[:b16], ys[:b16], amp="bf16")}
    flops = {k: count_flops(steps[k]) for k in ("hf_fp32", "mesaopt_fp32")}
    flops["mesaopt_bf16"] = flops["mesaopt_fp32"]  # same graph; autocast changes dtypes, not FLOPs
    secs = compare({k: steps[k] for k in ("hf_fp32", "mesaopt_fp32")}, repeats=cfg["repeats"], warmup=0)
    secs.update(compare({"mesaopt_bf16": steps["mesaopt_bf16"]}, repeats=cfg["bf16_repeats"], warmup=1))
    secs["mesaopt_bf16"] *= b / b16  # time of a full-batch step
    variants = {}
    for k, s in secs.items():
        gf = flops[k] / s / 1e9
        peak = peaks["bfloat16_gflops"] if k.endswith("bf16") else peaks["float32_gflops"]
        variants[k] = {"step_s": round(s, 4), "steps_per_s": round(1 / s, 4), "gflops": round(gf, 2),
                       "flops_per_step": flops[k], "fraction_of_own_dtype_peak": round(gf / peak, 3),
                       "fraction_of_fp32_peak": round(gf / peaks["float32_gflops"], 3)}
    best = min(("mesaopt_fp32", "mesaopt_bf16"), key=lambda k: secs[k])
    res = {"benchmark": "gpt", "shape": {**shape, "batch": b}, "params": {"hf": n_hf, "mesaopt": n_mo},
           "bf16_emulated": emulated, "bf16_timed_batch": b16,
           "peaks": peaks, "variants": variants,
           "speedup_mesaopt_fp32_vs_hf": round(secs["hf_fp32"] / secs["mesaopt_fp32"], 3),
           "speedup_mesaopt_bf16_vs_hf": round(secs["hf_fp32"] / secs["mesaopt_bf16"], 3),
           "speedup_best_vs_hf": round(secs["hf_fp32"] / secs[best], 3), "best_variant": best, "target": 2.0,
           "profile_mesaopt_fp32": profile_step(steps["mesaopt_fp32"], cfg["profile_top"]),
           "loss_curve_fp32_vs_bf16": loss_curves(cfg["curve"], d, points)}
    if plot:
        res["plot"] = str(_plot(res, out_dir(out)))
    return res


def _plot(res: dict, out: Path) -> Path:
    import matplotlib.pyplot as plt

    from mesaopt.plotting import paper_style, save_figure

    paper_style()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(res["variants"])
    a1.bar(names, [res["variants"][k]["steps_per_s"] for k in names])
    a1.set(ylabel="train steps / s", title=f"GPT {res['shape']['layers']}L w{res['shape']['width']} "
                                             f"B{res['shape']['batch']}")
    lc = res["loss_curve_fp32_vs_bf16"]
    a2.plot(lc["fp32"], label="fp32")
    a2.plot(lc["bf16"], label="bf16 autocast", ls="--")
    a2.set(xlabel="step", ylabel="train MSE", yscale="log", title="fp32 vs bf16 autocast (small GPT)")
    a2.legend()
    stem = out / "gpt_throughput"
    save_figure(fig, stem)
    return stem.with_suffix(".png")
