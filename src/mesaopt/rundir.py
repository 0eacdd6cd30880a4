"""Run folders: checked creation (writable, replaceable with --overwrite), config diffs for --resume, provenance.

Kept free of torch at import time so the CLI's error paths stay fast.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mesaopt.errors import ConfigError
from mesaopt.runtime import native_bf16

_COMMAND: str | None = None  # set by the CLI: the command line that started this process


def set_command(command: str | None) -> None:
    """Record the command line (the CLI calls this) for the ``provenance.command`` field of results.json."""
    global _COMMAND
    _COMMAND = command


def utc_now() -> str:
    """The current UTC time, ISO 8601 with a Z suffix and second resolution."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamped_out(name: str) -> Path:
    """runs/NAME-<YYYYmmdd-HHMMSS>/ under the current directory; -2, -3, ... appended if that folder exists
    (two runs started within the same second)."""
    base = Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out, k = base, 2
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def as_out_path(out: str | os.PathLike | None, flag: str = "--out") -> Path | None:
    """``out`` as a Path; ConfigError for an empty string (which Path would silently read as '.')."""
    if out is None:
        return None
    if isinstance(out, str) and not out.strip():
        raise ConfigError(f"{flag} is an empty string; give a folder path (e.g. {flag} runs/my-run)")
    return Path(out)


def ensure_writable_dir(out: Path, flag: str = "--out") -> None:
    """Create ``out`` (and parents) and check a file can be written there; ConfigError naming the folder if not."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} '{out}' exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"{flag} '{out}' cannot be created or written: {reason}") from None


def check_device(device: str, field: str = "device") -> None:
    """ConfigError if the torch device cannot be used here (e.g. cuda on a machine without a GPU)."""
    import torch

    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{field} {device!r} is not available here: {first}") from None


class FolderSwap:
    """``--overwrite``: move an existing run folder aside, start the new run, delete the old one once started.

    ``begin()`` renames ``out`` to a hidden sibling (``.NAME.old-PID``) and creates an empty ``out``;
    ``commit()`` deletes the old folder; ``rollback()`` puts it back (the new run failed to start).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.old: Path | None = None

    def begin(self) -> None:
        if not self.out.exists():
            return
        here, target = Path.cwd().resolve(), self.out.resolve()
        if target == here or target in here.parents or target == Path(target.anchor):
            raise ConfigError(f"--overwrite would replace '{self.out}', which holds the current directory; "
                              f"give the run folder itself")
        self.old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.old.exists():
            shutil.rmtree(self.old)
        try:
            os.replace(self.out, self.old)
        except OSError as e:
            self.old = None
            raise ConfigError(f"--overwrite cannot move '{self.out}' aside: {e.strerror or e}") from None

    def commit(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
            self.old = None

    def rollback(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.out, ignore_errors=True)
            os.replace(self.old, self.out)
            self.old = None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_diff(saved: dict, given: dict) -> list[str]:
    """Dotted names of the fields whose values differ between two config dicts (``key (saved A, given B)``)."""
    a, b = _flatten(saved), _flatten(given)
    missing = object()
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            fa = "-" if va is missing else repr(va)
            fb = "-" if vb is missing else repr(vb)
            diffs.append(f"{k} (saved {fa}, given {fb})")
    return diffs


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout mesaopt is imported from; None outside git or without git.

    Read once per process (``start_stamp()`` reads it when a run starts): a run that takes hours must record the
    code it was started with, not a commit made in the checkout while it ran."""
    here = Path(__file__).resolve().parent
    if "site-packages" in here.parts or "dist-packages" in here.parts:
        return None  # an installed copy: any enclosing repository is not mesaopt's
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = r.stdout.strip()
    return sha if r.returncode == 0 and len(sha) >= 40 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str | None:
    mod = sys.modules.get("torch")
    if mod is not None:
        return str(mod.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - provenance never fails a run
        return None


def start_stamp() -> str:
    """The UTC start time of a run; also fixes the commit its provenance will record (``_git_commit``)."""
    _git_commit()
    return utc_now()


def provenance(started_utc: str, api_call: str | None = None) -> dict[str, Any]:
    """The ``provenance`` record of results.json: what ran, where, with which code, when."""
    import mesaopt

    command = _COMMAND if _COMMAND is not None else api_call
    if command is None:
        command = " ".join(sys.argv)
    return {"version": mesaopt.__version__, "commit": _git_commit(), "command": command,
            "python": platform.python_version(), "torch": _torch_version(),
            "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                        "native_bf16": native_bf16()},
            "started_utc": started_utc, "finished_utc": utc_now()}
