"""Example domains shipped with fes: pure code that tutorials, tests and ``fes demo`` use."""
