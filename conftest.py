"""Run the Python code blocks of README.md as tests (docs/conftest.py covers docs/)."""

from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        SkipParser(),
    ],
    filenames=["README.md"],
    excludes=["docs/*", "docs/*/*"],
).pytest()
