"""Run one sweep trial: in this process (Ray tasks) or as ``python -m mesaopt.sweeps.worker TRIAL_DIR``.

The trial folder holds ``trial.json`` (experiment, resolved config, where to import a user experiment from,
threads). A Python exception is written to ``error.txt`` (full traceback) and the worker exits with code 1;
Ctrl-C exits with code 130 and writes nothing, so the trial counts as not run and is retried next time.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mesaopt.errors import MesaoptError
from mesaopt.io import atomic_write_json, atomic_write_text, read_results

TRIAL_FILE = "trial.json"
ERROR_FILE = "error.txt"
LOG_FILE = "log.txt"
CONFIG_FILE = "config.yaml"


def experiment_source(name: str) -> dict[str, str | None]:
    """Where workers import experiment ``name`` from: {"module", "file"} (only that module is imported)."""
    from mesaopt import experiments

    mod = experiments.get(name).fn.__module__
    m = sys.modules.get(mod)
    return {"module": mod, "file": getattr(m, "__file__", None)}


def import_experiment(source: dict[str, str | None] | None) -> None:
    """Import a user module that registers an experiment: by name, else from its file."""
    if not source or not source.get("module"):
        return
    mod = source["module"]
    if mod != "__main__":
        try:
            importlib.import_module(mod)
            return
        except ImportError:
            if not source.get("file"):
                raise
    path = source["file"]
    spec = importlib.util.spec_from_file_location(f"_mesaopt_user_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise MesaoptError(f"cannot import the experiment module from '{path}'")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def write_payload(trial_dir: Path, payload: dict[str, Any]) -> None:
    """Write ``trial.json`` (experiment, config, source, threads, the sweep's command) into the trial folder."""
    from mesaopt import rundir

    atomic_write_json(Path(trial_dir) / TRIAL_FILE, {"command": rundir._COMMAND, **payload})


def _same_saved_config(trial_dir: Path, exp: Any, cfg: Any) -> bool:
    """True if ``trial_dir`` holds config.yaml of an earlier attempt with exactly this config."""
    from mesaopt.config import build_config
    from mesaopt.experiments.base import upgrade_saved_config
    from mesaopt.io import load_yaml

    saved = trial_dir / CONFIG_FILE
    if not saved.is_file():
        return False
    try:
        data = load_yaml(saved)
        if data.pop("experiment", exp.name) != exp.name:
            return False
        data = upgrade_saved_config(exp.config_cls, data)
        return build_config(exp.config_cls, data).model_dump(mode="json") == cfg.model_dump(mode="json")
    except Exception:  # noqa: BLE001 - unreadable or outdated: start the trial afresh
        return False


def run_trial(trial_dir: str | Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one trial here; return {"status": "ok"|"failed", "error", "wall_s", "results"}; never raises."""
    from mesaopt import experiments
    from mesaopt.config import build_config
    from mesaopt.runtime import threads

    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / ERROR_FILE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    from mesaopt import rundir

    outer_command = rundir._COMMAND  # results.json's provenance names the sweep command and the trial
    if payload.get("command"):
        rundir.set_command(f"{payload['command']} (trial {trial_dir.name})")
    try:
        import_experiment(payload.get("source"))
        from mesaopt.experiments.base import REGISTRY

        name = payload["experiment"]
        exp = REGISTRY[name] if name in REGISTRY else experiments.get(name)
        cfg = build_config(exp.config_cls, payload["config"], where=f"trial config in {trial_dir}")
        with threads(max(1, int(payload.get("threads") or 1))):
            if _same_saved_config(trial_dir, exp, cfg):  # an earlier attempt was killed or failed: continue it
                experiments.run(exp.name, out=trial_dir, resume=True, progress=False)
            else:
                (trial_dir / CONFIG_FILE).unlink(missing_ok=True)
                experiments.run(exp.name, out=trial_dir, config=cfg, progress=False)
        return {"status": "ok", "error": None, "wall_s": time.perf_counter() - t0,
                "results": read_results(trial_dir)}
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - a trial's failure is data, not a crash of the sweep
        text = traceback.format_exc()
        atomic_write_text(trial_dir / ERROR_FILE, text)
        line = " ".join(f"{type(e).__name__}: {e}".split())
        return {"status": "failed", "error": line, "wall_s": time.perf_counter() - t0, "results": None}
    finally:
        rundir.set_command(outer_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mesaopt.sweeps.worker TRIAL_DIR``: exit 0 ok, 1 failed, 130 interrupted."""
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mesaopt.sweeps.worker TRIAL_DIR", file=sys.stderr)
        return 2
    trial_dir = Path(args[0])
    payload = json.loads((trial_dir / TRIAL_FILE).read_text(encoding="utf-8"))
    try:
        res = run_trial(trial_dir, payload)
    except KeyboardInterrupt:
        return 130
    if res["status"] != "ok":
        print(res["error"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
