"""The ``hearth`` command line."""
