"""``python -m benchmarks [NAME ...] [--quick] [--out DIR] [--threads N]``: run benchmarks, print one JSON object.

Default: peaks, lsa, algorithms, gpt, startup (``make bench``; <= 15 min on 2 idle cores). ``time-to-curve`` is the long
GPT training run and only runs when named:
``python -m benchmarks time-to-curve [--threads 1] [--seed S] [--max-steps N] [--resume]`` (the garg-d20
experiment, timed). Results go to ``--out`` (default ``runs/bench``, outside the source tree: stored results that
the docs cite are copied to ``benchmarks/results/`` by hand, with the commit that made them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from benchmarks import BENCHMARKS
from benchmarks.common import machine, matmul_peaks, out_dir

MODULES = {"peaks": "peaks", "lsa": "lsa", "algorithms": "algorithms", "gpt": "gpt", "hooks": "hooks",
           "time-to-curve": "time_to_curve", "startup": "startup"}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the named benchmarks, print their JSON to stdout; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: {' '.join(BENCHMARKS)}; "
                                            f"also: hooks, time-to-curve)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, seconds)")
    ap.add_argument("--out", default=None, help="folder for plots and results.json (default runs/bench)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--no-plot", action="store_true", help="skip the figures")
    ap.add_argument("--max-steps", type=int, default=None, help="time-to-curve: maximum training steps")
    ap.add_argument("--target", type=float, default=0.05, help="time-to-curve: normalised error to reach")
    ap.add_argument("--seed", type=int, default=0, help="time-to-curve: seed (default 0)")
    ap.add_argument("--resume", action="store_true",
                    help="time-to-curve: continue the run in --out (same seed)")
    args = ap.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    bad = [n for n in names if n not in MODULES]
    if bad:
        print(f"error: unknown benchmark {bad[0]!r}; choose from {sorted(MODULES)}", file=sys.stderr)
        return 2
    from mesaopt.runtime import threads

    with threads(args.threads):
        return _run(args, names)


def _run(args: argparse.Namespace, names: list[str]) -> int:
    """Run ``names`` with the parsed options; print and write the report; returns the exit code."""
    out = out_dir(args.out)
    report: dict = {"machine": machine(), "quick": args.quick, "results": {}}
    t0 = time.perf_counter()
    from mesaopt.errors import MesaoptError
    from mesaopt.io import atomic_write_json

    path = out / ("results-quick.json" if args.quick else "results.json")
    peaks = None
    if any(n in ("peaks", "lsa", "gpt") for n in names):
        peaks = matmul_peaks(n=256 if args.quick else 1024, repeats=2 if args.quick else 5,
                             budget_s=1.0 if args.quick else 20.0)
    for name in names:
        mod = importlib.import_module(f"benchmarks.{MODULES[name]}")
        t = time.perf_counter()
        kw = {"quick": args.quick, "out": out, "peaks": peaks, "plot": not args.no_plot}
        if name == "time-to-curve":
            kw = {"quick": args.quick, "out": out, "max_steps": args.max_steps, "target": args.target,
                  "plot": not args.no_plot, "progress": not args.quick, "seed": args.seed, "resume": args.resume,
                  "threads": args.threads}
        try:
            res = mod.run(**kw)
        except MesaoptError as e:  # e.g. --resume of a folder without a run, or a finished run
            print(f"error: {e}", file=sys.stderr)
            return 2
        res["wall_s"] = round(time.perf_counter() - t, 2)
        report["results"][name] = res
        print(f"[bench] {name} done in {res['wall_s']} s", file=sys.stderr)
        atomic_write_json(path, report)  # partial results survive an interrupted run
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    report["machine_end"] = machine()
    atomic_write_json(path, report)
    print(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
