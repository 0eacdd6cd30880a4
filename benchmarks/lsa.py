"""LSA: linear-time prefix (running sums + matmul chain) vs the quadratic token-by-token form, N = 64..4096.

Reports time and peak-memory curves of ``LSA.prefix`` (O(N D^2 + N L H D^3)) and ``LSA.prefix_quadratic``
(O(N^2 D^2) per layer, a (B, N, N, D) tensor), their ratio at every N, and the achieved GFLOP/s of a large
LSA training step (full-context forward as one matmul chain + backward + AdamW) as a fraction of the
float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import compare, count_flops, matmul_peaks, out_dir
from mesaopt.runtime import threads

FULL = {"ns": [64, 128, 256, 512, 1024, 2048, 4096], "b": 1, "d": 20, "layers": 4, "heads": 2,
        "max_quad_bytes": 4e8, "big": {"b": 64, "n": 512, "d": 255, "layers": 4, "heads": 4, "steps": 3}}
QUICK = {"ns": [16, 32, 64], "b": 1, "d": 5, "layers": 2, "heads": 1,
         "max_quad_bytes": 4e8, "big": {"b": 8, "n": 64, "d": 31, "layers": 2, "heads": 2, "steps": 1}}


def _model(d: int, layers: int, heads: int):
    from mesaopt.models.lsa import LSA

    return LSA(d=d, layers=layers, heads=heads, init_std=0.05, seed=0)


def _data(b: int, n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, n, generator=g)


def quad_bytes(b: int, n: int, d: int) -> float:
    """Bytes of one (B, N, N, D) float32 tensor of the quadratic prefix."""
    return 4.0 * b * n * n * (d + 1)


def _hwm_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM (reset by exec, unlike ru_maxrss, which a child
    inherits from its parent across fork+exec), falling back to ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - non-Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _mem_child() -> None:
    """Child process: peak RSS growth (MB) of each method at increasing N (printed as JSON)."""
    cfg = json.loads(sys.argv[-1])
    with threads(1):
        out = _mem_growth(cfg)
    print(json.dumps(out))


def _mem_growth(cfg: dict) -> dict[str, float]:
    """Peak RSS growth (MB) of ``cfg["method"]`` at each N in ``cfg["ns"]`` (an LSA of cfg's shape)."""
    m = _model(cfg["d"], cfg["layers"], cfg["heads"])
    fn = getattr(m, cfg["method"])
    xs, ys = _data(cfg["b"], 8, cfg["d"])
    with torch.no_grad():
        fn(xs, ys)
    base = _hwm_mb()
    out = {}
    for n in cfg["ns"]:
        xs, ys = _data(cfg["b"], n, cfg["d"])
        with torch.no_grad():
            fn(xs, ys)
        del xs, ys
        out[str(n)] = round(_hwm_mb() - base, 2)
    return out


def peak_memory(method: str, ns: list[int], cfg: dict) -> dict[str, float]:
    """Peak RSS growth in MB per N for ``method`` (a fresh child process; N increasing, so peaks are cumulative)."""
    args = json.dumps({"method": method, "ns": ns, "b": cfg["b"], "d": cfg["d"], "layers": cfg["layers"],
                       "heads": cfg["heads"]})
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", "from benchmarks.lsa import _mem_child; _mem_child()", args],
                         capture_output=True, text=True, cwd=root, env=env, timeout=600, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def big_step(cfg: dict, fp32_peak: float) -> dict:
    """GFLOP/s of a full LSA training step (query objective) and its fraction of the fp32 matmul peak."""
    from mesaopt.models.lsa import LSA

    b, n, d = cfg["b"], cfg["n"], cfg["d"]
    m = LSA(d=d, layers=cfg["layers"], heads=cfg["heads"], init_std=0.02, seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(b, n + 1, d, generator=g), torch.randn(b, n + 1, generator=g)

    def step() -> None:
        pred = m(xs[:, :n], ys[:, :n], xs[:, n:])
        loss = (pred - ys[:, n:]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    flops = count_flops(step)
    secs = compare({"step": step}, repeats=cfg["steps"], warmup=1)["step"]
    gflops = flops / secs / 1e9
    return {"shape": {k: cfg[k] for k in ("b", "n", "d", "layers", "heads")}, "flops_per_step": flops,
            "step_s": round(secs, 4), "gflops": round(gflops, 2), "fp32_peak_gflops": fp32_peak,
            "fraction_of_fp32_peak": round(gflops / fp32_peak, 3), "target_fraction": 0.5}


def run(quick: bool = False, out: str | Path | None = None, peaks: dict | None = None, plot: bool = True) -> dict:
    """Time/memory curves of LSA prefix (linear vs quadratic) and the big-step GFLOP/s; returns the JSON dict."""
    cfg = QUICK if quick else FULL
    b, d = cfg["b"], cfg["d"]
    m = _model(d, cfg["layers"], cfg["heads"])
    rows = []
    for n in cfg["ns"]:
        xs, ys = _data(b, n, d)
        fns = {"linear": lambda xs=xs, ys=ys: m.prefix(xs, ys)}
        qb = quad_bytes(b, n, d)
        if qb <= cfg["max_quad_bytes"]:
            fns["quadratic"] = lambda xs=xs, ys=ys: m.prefix_quadratic(xs, ys)
        with torch.no_grad():
            secs = compare(fns, repeats=3, warmup=1, min_time=0.05)
            if "quadratic" in fns:
                err = float((m.prefix(xs, ys) - m.prefix_quadratic(xs, ys)).abs().max())
        row = {"n": n, "linear_s": secs["linear"], "quadratic_s": secs.get("quadratic"),
               "speedup": round(secs["quadratic"] / secs["linear"], 2) if "quadratic" in secs else None,
               "max_abs_diff": err if "quadratic" in fns else None,
               "quadratic_tensor_mb": round(qb / 2**20, 1)}
        rows.append(row)
    fit_ns = [r["n"] for r in rows if r["quadratic_s"] is not None]
    mem_lin = peak_memory("prefix", cfg["ns"], cfg)
    mem_quad = peak_memory("prefix_quadratic", fit_ns, cfg)
    for r in rows:
        r["linear_peak_mb"] = mem_lin.get(str(r["n"]))
        r["quadratic_peak_mb"] = mem_quad.get(str(r["n"]))
    if peaks is None:
        peaks = matmul_peaks(dtypes=("float32",), n=256 if quick else 1024, budget_s=1.0 if quick else 20.0)
    big = big_step(cfg["big"], peaks["float32_gflops"])
    last = [r for r in rows if r["speedup"] is not None][-1]
    res = {"benchmark": "lsa", "shape": {k: cfg[k] for k in ("b", "d", "layers", "heads")}, "curve": rows,
           "speedup_at_largest_common_n": {"n": last["n"], "speedup": last["speedup"]},
           "quadratic_skipped_above_bytes": cfg["max_quad_bytes"], "big_step": big}
    if plot:
        res["plot"] = str(_plot(rows, out_dir(out)))
    return res


def _plot(rows: list[dict], out: Path) -> Path:
    import matplotlib.pyplot as plt

    from mesaopt.plotting import paper_style, save_figure

    paper_style()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ns = [r["n"] for r in rows]
    for key, label in (("linear", "prefix (running sums)"), ("quadratic", "prefix_quadratic")):
        pts = [(r["n"], r[f"{key}_s"]) for r in rows if r[f"{key}_s"] is not None]
        a1.loglog(*zip(*pts, strict=True), "o-", label=label)
        mem = [(r["n"], max(r[f"{key}_peak_mb"], 0.01)) for r in rows if r.get(f"{key}_peak_mb") is not None]
        if mem:
            a2.loglog(*zip(*mem, strict=True), "o-", label=label)
    a2.loglog(ns, [r["quadratic_tensor_mb"] for r in rows], "k:", label="one (B,N,N,D) tensor")
    a1.set(xlabel="N (sequence length)", ylabel="seconds per call", title="LSA prefix: time")
    a2.set(xlabel="N (sequence length)", ylabel="peak RSS growth (MB)", title="LSA prefix: memory")
    a1.legend()
    a2.legend()
    stem = out / "lsa_cost_vs_n"
    save_figure(fig, stem)
    return stem.with_suffix(".png")
