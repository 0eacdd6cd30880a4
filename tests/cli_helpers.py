"""Shared by the CLI tests: run ``mesaopt.cli.main`` in-process and capture its exit code and output."""

from __future__ import annotations

from mesaopt.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``mesaopt ARGV`` run in this process (exit code 0 when main returns)."""
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err
