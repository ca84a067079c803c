"""Tests of the Hypothesis tools shipped in fes.testing: strategies, laws, machines."""
