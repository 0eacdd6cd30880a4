"""``python -m mesaopt`` runs the CLI."""

from mesaopt.cli import main

main()
