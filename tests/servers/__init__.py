"""Tests under real servers: the ``pserve`` runners and the server matrices.

Every test here starts a real server (a subprocess, or a thread of the test
process) on 127.0.0.1, so ``conftest.py`` marks them all ``servers``.
"""
