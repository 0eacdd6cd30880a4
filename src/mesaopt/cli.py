"""The ``mesaopt`` command line: a thin typer shell over the Python API.

Bad input (unknown experiment, bad --set key or value, unreadable YAML, missing folder, unusable --out,
corrupt checkpoint, out of memory at start, ...) prints one line ``error: ...`` on stderr and exits with
code 2; training divergence exits with code 3. See docs/cli.md.

torch, matplotlib, cvxpy and ray are imported inside the commands that need them, so ``--help`` and
the error paths start in well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mesaopt.errors import MesaoptError, TrainingDiverged

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="mesaopt: which algorithm is this transformer running in context?")
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def metrics_table(title: str, metrics: dict[str, float]) -> Table:
    """A rich table of metric name -> value."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    return table


def _version_callback(value: bool) -> None:
    if value:
        import mesaopt

        sys.stdout.write(f"mesaopt {mesaopt.__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="print the mesaopt version and exit")) -> None:
    """mesaopt: which algorithm is this transformer running in context?"""


def _print_results(title: str, res, json_: bool) -> None:
    """results.json (+ the run folder as ``out``) on stdout (``--json``) or a metrics table and the results path."""
    if json_:
        import json

        from mesaopt.io import to_json

        try:  # the file also holds the provenance record
            data = json.loads((res.out / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = res.to_dict()
        sys.stdout.write(to_json({**data, "out": str(res.out)}) + "\n")
        return
    console = Console()
    console.print(metrics_table(f"{title}  (wall {res.wall_s:.1f} s)", res.metrics))
    console.print(f"results: {res.out / 'results.json'}")


@app.command("list")
def list_cmd(json_: bool = typer.Option(False, "--json", help="print [{name, description}, ...] as JSON")) -> None:
    """List the experiments with a one-line description."""
    from mesaopt import experiments

    if json_:
        import json

        rows = [{"name": n, "description": experiments.get(n).description} for n in experiments.names()]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("experiment")
    table.add_column("what it reproduces")
    for name in experiments.names():
        table.add_row(name, experiments.get(name).description)
    Console().print(table)


@app.command("config")
def config_cmd(
    name: str = typer.Argument(..., help="experiment name (see `mesaopt list`)"),
    yaml_: bool = typer.Option(False, "--yaml", help="print a ready-to-edit YAML (use it with mesaopt run NAME -c)"),
    quick: bool = typer.Option(False, "--quick", help="show the values --quick would use"),
) -> None:
    """Every config field of an experiment: dotted name, type, default and description."""
    from mesaopt import experiments
    from mesaopt.cli_config import config_rows, config_yaml

    cfg = experiments.make_config(name, quick=quick)
    if yaml_:
        header = [f"# config of `mesaopt run {name}`: edit, then `mesaopt run {name} -c this.yaml`",
                  f"experiment: {name}"]
        sys.stdout.write("\n".join(header + config_yaml(cfg)) + "\n")
        return
    table = Table(title=f"{name} config ({'--quick' if quick else 'defaults'}; override with --set NAME=VALUE)",
                  header_style="bold")
    for col in ("field", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for fname, typ, value, desc in config_rows(cfg):
        table.add_row(fname, typ, repr(value) if isinstance(value, str) else str(value), desc)
    _table_console().print(table)


@app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help="experiment name (see `mesaopt list`)"),
    config: Path | None = typer.Option(None, "-c", "--config", help="YAML file of config fields"),
    set_: list[str] | None = typer.Option(None, "--set", help="override a field: key=value (repeatable)"),
    out: str | None = typer.Option(None, "--out", help="run folder (default runs/NAME-<timestamp>)"),
    quick: bool = typer.Option(False, "--quick", help="shrink to a ~30 s smoke run"),
    json_: bool = typer.Option(False, "--json", help="print results.json (+ out: the run folder) and nothing else"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint "
                                "(repeating the original -c/--set/--quick is fine; they must match)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in --out (deleted once the new "
                                   "run has started)"),
) -> None:
    """Run an experiment and write results.json, figures and checkpoints to its run folder."""
    from mesaopt import experiments
    from mesaopt.config import parse_assignments

    overrides = parse_assignments(set_)
    res = experiments.run(name, overrides=overrides, out=out, quick=quick, config_path=config,
                          resume=resume, progress=not json_, overwrite=overwrite)
    _print_results(name, res, json_)


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "-c", "--config", help="YAML with model:, task: and train: sections"),
    set_: list[str] | None = typer.Option(None, "--set", help="override: lr=1e-3, train.steps=500, model.d=5"),
    out: str | None = typer.Option(None, "--out", help="run folder (default runs/train-<timestamp>)"),
    resume: str | None = typer.Option(None, "--resume", help="continue the run in this folder from its checkpoint"),
    json_: bool = typer.Option(False, "--json", help="print results.json (+ out: the run folder) and nothing else"),
    device: str | None = typer.Option(None, "--device", help="torch device (cpu, cuda, ...); overrides train.device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in --out (deleted once the new "
                                   "run has started)"),
) -> None:
    """Train any model on any task; writes config.yaml, metrics.jsonl, ckpt/ and results.json."""
    from mesaopt.config import parse_assignments
    from mesaopt.errors import ConfigError
    from mesaopt.train.job import make_job, run_job

    if resume is not None:
        if config is not None or set_ or device is not None:
            raise ConfigError("--resume continues the config saved in the run folder; drop -c/--set/--device")
        if out is not None and Path(out) != Path(resume):
            raise ConfigError("--resume DIR already names the run folder; drop --out")
        res = run_job(None, out=resume, resume=True, progress=not json_, overwrite=overwrite)
    else:
        if config is None:
            raise ConfigError("mesaopt train needs -c cfg.yaml (with model:, task: and train: sections)")
        from mesaopt.rundir import as_out_path

        as_out_path(out)  # an empty --out fails before the job is built
        job = make_job(config, parse_assignments(set_), device=device)
        res = run_job(job, out=out, progress=not json_, overwrite=overwrite)
    _print_results("train", res, json_)


@app.command("sweep")
def sweep_cmd(
    name: str | None = typer.Argument(None, help="experiment name (or give it in the sweep file)"),
    file: Path | None = typer.Option(None, "-f", "--file", help="sweep YAML: experiment, config, set, grid, engine..."),
    grid: list[str] | None = typer.Option(None, "--grid", help="key=v1,v2,... (repeatable; cartesian product)"),
    config: Path | None = typer.Option(None, "-c", "--config", help="base YAML config of the experiment"),
    set_: list[str] | None = typer.Option(None, "--set", help="override for every trial: key=value (repeatable)"),
    quick: bool = typer.Option(False, "--quick", help="use the experiment's --quick settings in every trial"),
    engine: str | None = typer.Option(None, "--engine", help="local (default: worker processes here) | ray"),
    address: str | None = typer.Option(None, "--address", help="ray cluster address, e.g. auto or ray://head:10001"),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="trials at once (local default: cores)"),
    cpus_per_trial: float | None = typer.Option(None, "--cpus-per-trial", help="cores per trial (default 1)"),
    out: str | None = typer.Option(None, "--out", help="sweep folder (default runs/sweep-NAME-<hash>)"),
    json_: bool = typer.Option(False, "--json", help="print the sweep summary and rows as JSON, nothing else"),
) -> None:
    """Run an experiment over a grid; finished trials are skipped; writes OUT/sweep.parquet."""
    from mesaopt import sweeps
    from mesaopt.config import parse_assignments
    from mesaopt.errors import ConfigError
    from mesaopt.rundir import as_out_path

    out = as_out_path(out)
    cli = {"grid": sweeps.parse_grid(grid), "set": parse_assignments(set_), "experiment": name,
           "config": str(config) if config else None, "quick": quick, "engine": engine, "address": address,
           "max_parallel": max_parallel, "cpus_per_trial": cpus_per_trial}
    if file is not None:
        spec = sweeps.load_spec(file, **cli)
    else:
        if name is None:
            raise ConfigError("mesaopt sweep needs an experiment NAME or a sweep file -f sweep.yaml")
        from mesaopt.config import validate

        spec = validate(sweeps.SweepSpec, {k: v for k, v in cli.items() if v is not None and v is not False},
                        where="sweep")
    res = sweeps.run_sweep(spec, out=out, progress=not json_)
    if json_:
        from mesaopt.io import to_json

        sys.stdout.write(to_json(res.to_dict()) + "\n")
    else:
        console = Console()
        console.print(sweeps.summary(res.table, res.grid_keys, title=f"sweep {spec.experiment}"))
        console.print(f"{res.n_trials} trials: ran {res.ran}, skipped {res.skipped} (already finished), "
                      f"failed {res.failed}; table: {res.out / 'sweep.parquet'}", highlight=False)
    if res.failed:
        sys.exit(1)


def _table_console() -> Console:
    """A stdout console; wide when stdout is not a terminal (so piped tables are not squeezed to 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _load_run(path: Path, device: str = "cpu") -> tuple:
    """(model, task, n_context) of a run/ckpt folder: the task spec and n_points are read from the checkpoint state."""
    from mesaopt import tasks
    from mesaopt.errors import CheckpointError, ConfigError
    from mesaopt.train.checkpoint import load_model

    model, state = load_model(path, device=device)
    spec = state.get("task")
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint '{state.get('path', path)}' stores no task spec; identify/compare need one")
    try:
        task = tasks.build(spec)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild the task from the checkpoint spec: {' '.join(str(e).split())}") from None
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    n_points = train.get("n_points")
    points = (train.get("curriculum") or {}).get("points") if isinstance(train.get("curriculum"), dict) else None
    if isinstance(points, dict) and isinstance(points.get("end"), int):
        n_points = points["end"]  # a points curriculum ends at this sequence length
    if not isinstance(n_points, int) or n_points < 2:
        raise CheckpointError(f"checkpoint train config has no usable n_points (got {n_points!r})")
    return model, task, n_points - 1


_MODEL_HELP = "one model of a multi-model run folder (its sub-folder, e.g. k3); default: every model in it"


@app.command("identify")
def identify_cmd(
    ckpt_dir: Path = typer.Argument(..., help="run folder (one model or sub-runs k1/, k2/, ...) or ckpt folder"),
    json_: bool = typer.Option(False, "--json", help="print the result as JSON to stdout and nothing else"),
    families: str = typer.Option("ols,gd,ridge,newton,gdpp", "--families", help="algorithm families to match"),
    batch_size: int = typer.Option(1024, "--batch-size", help="tasks per fit batch and per eval batch"),
    max_gd_steps: int = typer.Option(64, "--max-gd-steps", help="largest number of GD steps scanned"),
    max_newton_iters: int = typer.Option(24, "--max-newton-iters", help="largest number of Newton iterations"),
    seed: int = typer.Option(0, "--seed", help="seed of the fit/eval batches"),
    readout: str = typer.Option("model", "--readout", help="per-layer prediction: model (its read-out head on "
                                "every layer) or probe (a linear probe to y per layer, GPT; Fu et al.)"),
    probe_batch_size: int = typer.Option(4096, "--probe-batch-size", help="sequences to fit the probes on"),
    model_name: str | None = typer.Option(None, "--model", help=_MODEL_HELP),
) -> None:
    """Which algorithm does each layer run? Best-matching algorithm + fitted hyper-parameters per layer."""
    from mesaopt.analysis import identify as idf
    from mesaopt.cli_models import emit_json, identify_table, models

    fams = [f.strip() for f in families.split(",") if f.strip()]
    kw = dict(families=fams, batch_size=batch_size, seed=seed, max_gd_steps=max_gd_steps,
              max_newton_iters=max_newton_iters, readout=readout, probe_batch_size=probe_batch_size)
    results = {}
    for key, folder in models(ckpt_dir, model_name, err_console):
        model, task, n_context = _load_run(folder)
        if json_:
            results[key] = idf.identify(model, task, n_context, **kw)
            continue
        with err_console.status(f"identifying {folder} ...") as status:
            res = idf.identify(model, task, n_context, progress=lambda s, st=status: st.update(s), **kw)
        _table_console().print(identify_table(str(folder), res, n_context, readout, idf.format_hparams))
    if json_:
        emit_json(results)


@app.command("compare")
def compare_cmd(
    ckpt_dir: Path = typer.Argument(..., help="run folder (one model or sub-runs k1/, k2/, ...) or ckpt folder"),
    algorithms: str = typer.Option("gd,ridge,newton", "--algorithms", help="comma-separated algorithm names"),
    json_: bool = typer.Option(False, "--json", help="print the result as JSON to stdout and nothing else"),
    plot: Path | None = typer.Option(None, "--plot", help="also save a PNG (and PDF) bar chart to this path "
                                     "(several models: one chart each, PATH-k1.png, ...)"),
    batch_size: int = typer.Option(1024, "--batch-size", help="tasks per fit batch and per eval batch"),
    seed: int = typer.Option(0, "--seed", help="seed of the fit/eval batches"),
    model_name: str | None = typer.Option(None, "--model", help=_MODEL_HELP),
) -> None:
    """Pairwise metrics (loss, pred_diff, sens_cos, err_cos) between a trained model and reference algorithms."""
    from mesaopt.analysis import identify as idf
    from mesaopt.cli_models import compare_table, emit_json, models, plot_compare, plot_path

    results = {}
    for key, folder in models(ckpt_dir, model_name, err_console):
        model, task, n_context = _load_run(folder)
        res = idf.compare(model, task, n_context, algorithms=algorithms.split(","), batch_size=batch_size, seed=seed)
        if plot is not None:
            plot_compare(res, plot_path(plot, key))
        results[key] = res
        if not json_:
            _table_console().print(compare_table(str(folder), res, n_context, idf.format_hparams))
    if json_:
        emit_json(results)


from mesaopt import cli_patch  # noqa: E402  (export / patch live there; registered here)

app.command("export")(cli_patch.export_cmd)
app.command("patch")(cli_patch.patch_cmd)


@app.command("svm")
def svm_cmd(
    param: str = typer.Option("W", "--param", help="parametrization: W (Frobenius SVM) or KQ (nuclear SVM)"),
    n: int = typer.Option(4, "--n", help="sequences"),
    T: int = typer.Option(6, "--T", help="tokens per sequence"),
    d: int = typer.Option(8, "--d", help="token dimension"),
    seed: int = typer.Option(0, "--seed", help="seed of the problem and the initialization"),
    steps: int = typer.Option(2000, "--steps", help="normalized GD iterations"),
    lr: float = typer.Option(0.1, "--lr", help="normalized GD step size"),
    json_: bool = typer.Option(False, "--json", help="print the result as JSON to stdout and nothing else"),
) -> None:
    """Train one attention layer by normalized GD and compare its direction with the Att-SVM solution."""
    import json

    from mesaopt.svm import implicit_bias_demo

    res = implicit_bias_demo(param=param, n=n, T=T, d=d, seed=seed, steps=steps, lr=lr, progress=not json_)
    if json_:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    table = Table(title=f"GD on {param} vs Att-SVM ({res['norm']}), n={n} T={T} d={d} seed={seed}",
                  header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in res.items():
        if k not in ("param", "norm", "n", "T", "d", "seed"):
            table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    Console().print(table)

@app.command("report")
def report_cmd(
    name: str | None = typer.Argument(None, help="table name (an experiment with runs stored in docs/results/)"),
    check: bool = typer.Option(False, "--check", help="list the docs tables that differ from their stored runs; "
                               "exit 1 if any"),
    write: bool = typer.Option(False, "--write", help="re-render the report blocks in docs/ and README.md"),
    docs: Path = typer.Option(Path("docs"), "--docs", help="docs folder (stored runs in DOCS/results/)"),
) -> None:
    """Documented tables from the stored runs in docs/results/: print one, --check the docs, --write them."""
    from mesaopt import report

    text, code = report.command(name, check_=check, write_=write, docs=docs)
    sys.stdout.write(text)
    if code:
        sys.exit(code)


def _fail(msg: str, code: int) -> None:
    line = " ".join(str(msg).split())
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


_OOM_MARKERS = ("out of memory", "DefaultCPUAllocator: can't allocate", "can't allocate memory")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(m in str(e) for m in _OOM_MARKERS)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the typer app, turning user errors into one line and an exit code."""
    import shlex

    from mesaopt.rundir import set_command

    args = list(sys.argv[1:] if argv is None else argv)
    set_command(shlex.join(["mesaopt", *args]))
    try:
        rc = app(args=argv, prog_name="mesaopt", standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C inside a command into a returned exit code 130
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.TyperException as e:  # typer's (vendored click) usage errors
        if type(e).__name__ == "NoArgsIsHelpError":  # help was already printed
            sys.exit(0)
        fmt = getattr(e, "format_message", None)
        _fail(fmt() if callable(fmt) else str(e), EXIT_BAD_INPUT)
    except TrainingDiverged as e:
        _fail(str(e), EXIT_DIVERGED)
    except MesaoptError as e:
        _fail(str(e), EXIT_BAD_INPUT)
    except Exception as e:  # pydantic is imported lazily, so its ValidationError is matched by name
        if type(e).__name__ == "ValidationError" and type(e).__module__.startswith("pydantic"):
            from mesaopt.config import format_validation_error

            _fail(format_validation_error(e), EXIT_BAD_INPUT)
        if not (isinstance(e, RuntimeError | MemoryError) and _is_oom(e)):
            raise
        if args and args[0] in ("identify", "compare"):
            _fail("out of memory: the batches do not fit; lower --batch-size (and --probe-batch-size)", EXIT_BAD_INPUT)
        _fail("out of memory: the batches do not fit; lower the batch-size fields with --set, e.g. "
              "train.batch_size, train.eval_batch_size, eval_batch_size (see `mesaopt config NAME`)", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _fail("interrupted; finished checkpoints are kept (continue with --resume)", 130)

if __name__ == "__main__":  # pragma: no cover
    main()
