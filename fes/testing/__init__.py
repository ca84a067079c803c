"""Tools for testing fes domains: specifications, and (with Hypothesis) properties.

``given``/``when``/``then`` specifications need nothing but fes; the
Hypothesis strategies, laws and state machines live in submodules that
import Hypothesis (install ``fes-events[testing]``).
"""

from fes.testing.specs import Specification, given, given_policy

__all__ = ["Specification", "given", "given_policy"]
