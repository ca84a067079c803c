"""Run every Python code block of the documentation as a test, with Sybil.

The code blocks of one page share a namespace and run in order, so a page
reads like one interpreter session.  A block that starts with ``>>>`` is a
doctest: its printed output and exceptions are checked as well, so the error
messages the pages show are the ones fes really gives.
"""

from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        SkipParser(),
    ],
    patterns=["*.md"],
).pytest()
