"""The ``datadiet`` command line (see :mod:`datadiet.cli.main`)."""
