"""The cases of :mod:`fes.testing.stores`, one module per kind of operation."""
