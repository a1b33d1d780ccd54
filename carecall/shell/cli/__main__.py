"""``python -m carecall.shell.cli``: the ``carecall`` command."""

from carecall.shell.cli import main

main()
