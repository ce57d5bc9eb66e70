"""The test suite. pytest-xdist gives its worker processes COLUMNS=80 and LINES=24; the CLI's
consoles read COLUMNS once, when made, and would keep 80 columns for every test of the worker,
whatever width a test asks for. A worker drops them here, before anything is imported."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
