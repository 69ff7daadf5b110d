"""Tiny data makers shared by the tests (imported, not collected), and where the repository is."""

import os

# The repository root: subprocesses started there import this checkout's packages first.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
