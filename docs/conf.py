"""Sphinx configuration for aiopyramid_ng."""

import configparser
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

_setup_cfg = configparser.ConfigParser()
_setup_cfg.read(os.path.join(ROOT, "setup.cfg"))

project = "aiopyramid_ng"
author = "aiopyramid_ng contributors"
copyright = "aiopyramid_ng contributors"
release = _setup_cfg["metadata"]["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# No intersphinx mapping: the documentation must build offline.

templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "alabaster"
html_static_path: list[str] = []
