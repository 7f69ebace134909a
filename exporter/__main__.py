"""``python -m exporter`` runs the same CLI as the ``wa-exporter`` script."""

from exporter.cli import main

raise SystemExit(main())
