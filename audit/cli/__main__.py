"""``python -m audit.cli`` runs the ``lora-audit`` command line."""

from audit.cli import main

main()
