"""The ``pspsim`` command line."""
