"""Engines that run trials: ``local`` (worker processes on this machine) and ``ray`` (a Ray cluster).

Both take the trials still to run and call ``on_done(trial, outcome)`` as each one finishes, where outcome is
{"status": "ok"|"failed", "error": str|None, "wall_s": float}. A trial's failure never stops the others.
On Ctrl-C (KeyboardInterrupt) both stop the running trials and re-raise; finished trials are untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesaopt.errors import ConfigError
from mesaopt.io import atomic_write_json, atomic_write_text, results_complete
from mesaopt.sweeps.grid import Trial
from mesaopt.sweeps.worker import ERROR_FILE, LOG_FILE, run_trial, write_payload

OnDone = Callable[[Trial, dict[str, Any]], None]


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _last_line(path: Path) -> str | None:
    lines = [ln for ln in _tail(path, 200).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None


class LocalEngine:
    """Run each trial as ``python -m mesaopt.sweeps.worker DIR`` with at most ``max_parallel`` at once."""

    def __init__(self, max_parallel: int | None = None, cpus_per_trial: float = 1.0, poll_s: float = 0.05):
        self.max_parallel = max_parallel or max(1, int((os.cpu_count() or 1) // max(cpus_per_trial, 1)))
        self.threads = max(1, int(cpus_per_trial))
        self.poll_s = poll_s

    def _env(self) -> dict[str, str]:
        import mesaopt

        env = dict(os.environ)
        src = str(Path(mesaopt.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([src, *sys.path[1:], env.get("PYTHONPATH", "")]).strip(os.pathsep)
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(self.threads)
        return env

    def _finish(self, trial_dir: Path, rc: int, t0: float) -> dict[str, Any]:
        wall = time.perf_counter() - t0
        err_file = trial_dir / ERROR_FILE
        if rc == 0 and results_complete(trial_dir):
            return {"status": "ok", "error": None, "wall_s": wall}
        if not err_file.is_file():
            if rc < 0:
                try:
                    what = f"killed by signal {signal.Signals(-rc).name}"
                except ValueError:
                    what = f"killed by signal {-rc}"
            else:
                what = f"worker exited with code {rc}" + (" without results.json" if rc == 0 else "")
            atomic_write_text(err_file, what + "\n--- last lines of log.txt ---\n" + _tail(trial_dir / LOG_FILE))
            return {"status": "failed", "error": what, "wall_s": wall}
        return {"status": "failed", "error": _last_line(err_file), "wall_s": wall}

    def run(self, trials: list[Trial], out: Path, payloads: dict[str, dict], on_done: OnDone) -> None:
        """Run ``trials`` (payloads keyed by trial hash) in subprocesses, ``max_parallel`` at a time."""
        queue = list(trials)
        running: dict[str, tuple[Trial, subprocess.Popen, float, Any]] = {}
        env = self._env()
        try:
            while queue or running:
                while queue and len(running) < self.max_parallel:
                    t = queue.pop(0)
                    d = t.dir(out)
                    d.mkdir(parents=True, exist_ok=True)
                    (d / ERROR_FILE).unlink(missing_ok=True)
                    write_payload(d, {**payloads[t.hash], "threads": self.threads})
                    log = open(d / LOG_FILE, "w", encoding="utf-8")  # noqa: SIM115 - closed when the trial ends
                    proc = subprocess.Popen([sys.executable, "-m", "mesaopt.sweeps.worker", str(d)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
                    running[t.hash] = (t, proc, time.perf_counter(), log)
                for h in list(running):
                    t, proc, t0, log = running[h]
                    rc = proc.poll()
                    if rc is None:
                        continue
                    log.close()
                    del running[h]
                    on_done(t, self._finish(t.dir(out), rc, t0))
                time.sleep(self.poll_s)
        except BaseException:
            for _, proc, _, _log in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 5.0
            for _, proc, _, log in running.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()
            raise


def _ray_trial(trial_dir: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Ray task body: run the trial in the Ray worker process."""
    return run_trial(trial_dir, payload)


class RayEngine:
    """Submit each trial as a Ray task with ``num_cpus=cpus_per_trial``; Ray does the scheduling.

    ``address=None`` starts a local Ray instance (or reuses one already initialised in this process);
    ``address="auto"`` or ``"ray://head:10001"`` connects to a cluster. Results come back to the driver,
    which writes each trial's results.json if the worker's disk is not shared with it.
    """

    def __init__(self, address: str | None = None, max_parallel: int | None = None, cpus_per_trial: float = 1.0):
        self.address = address
        self.max_parallel = max_parallel
        self.cpus = cpus_per_trial

    @staticmethod
    def import_ray() -> Any:
        """The ``ray`` module, or ConfigError telling how to install it."""
        try:
            import ray
        except ImportError:
            raise ConfigError("engine 'ray' needs Ray, which is not installed: pip install 'mesaopt[ray]'") from None
        return ray

    def run(self, trials: list[Trial], out: Path, payloads: dict[str, dict], on_done: OnDone) -> None:
        """Run ``trials`` as Ray tasks, at most ``max_parallel`` in flight (None: as many as Ray can place)."""
        ray = self.import_ray()
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(include_dashboard=False, **kw)
            except Exception as e:  # noqa: BLE001 - ray raises plain Exception on startup timeouts
                where = f"connect to Ray at {self.address!r}" if self.address else "start a local Ray instance"
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"could not {where}: {first}") from None
            started = True
        total = float(ray.cluster_resources().get("CPU", 0.0))
        if total < self.cpus:
            if started:
                ray.shutdown()
            raise ConfigError(f"cpus_per_trial={self.cpus} exceeds the Ray cluster's {total:g} CPUs")
        remote = ray.remote(num_cpus=self.cpus, max_retries=0)(_ray_trial)
        threads = max(1, int(self.cpus))
        queue = list(trials)
        inflight: dict[Any, tuple[Trial, float]] = {}
        limit = self.max_parallel or len(trials) or 1
        try:
            while queue or inflight:
                while queue and len(inflight) < limit:
                    t = queue.pop(0)
                    d = t.dir(out)
                    d.mkdir(parents=True, exist_ok=True)
                    payload = {**payloads[t.hash], "threads": threads}
                    write_payload(d, payload)
                    inflight[remote.remote(str(d.resolve()), payload)] = (t, time.perf_counter())
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    t, t0 = inflight.pop(ref)
                    on_done(t, self._collect(ray, ref, t.dir(out), t0))
        except BaseException:
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while stopping
                    pass
            raise
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def _collect(ray: Any, ref: Any, trial_dir: Path, t0: float) -> dict[str, Any]:
        try:
            res = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - worker crash, node lost, cancelled
            line = " ".join(f"{type(e).__name__}: {e}".split())[:500]
            atomic_write_text(trial_dir / ERROR_FILE, f"{type(e).__name__}: {e}\n")
            return {"status": "failed", "error": line, "wall_s": time.perf_counter() - t0}
        if res["status"] == "ok" and res.get("results") and not results_complete(trial_dir):
            atomic_write_json(trial_dir / "results.json", res["results"])  # worker disk not shared with us
        if res["status"] != "ok" and not (trial_dir / ERROR_FILE).is_file():
            atomic_write_text(trial_dir / ERROR_FILE, (res.get("error") or "failed") + "\n")
        return {"status": res["status"], "error": res.get("error"), "wall_s": res.get("wall_s", 0.0)}


def make_engine(name: str, address: str | None = None, max_parallel: int | None = None,
                cpus_per_trial: float = 1.0) -> LocalEngine | RayEngine:
    """The engine called ``name`` (local | ray)."""
    if name == "local":
        if address:
            raise ConfigError("--address is only used with --engine ray")
        return LocalEngine(max_parallel=max_parallel, cpus_per_trial=cpus_per_trial)
    if name == "ray":
        RayEngine.import_ray()
        return RayEngine(address=address, max_parallel=max_parallel, cpus_per_trial=cpus_per_trial)
    raise ConfigError(f"engine must be one of local, ray; got {name!r}")
