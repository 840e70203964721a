"""``python -m runner.lr_find``: see :mod:`runner.lr_find.cli`."""

from runner.lr_find.cli import cli

cli()
