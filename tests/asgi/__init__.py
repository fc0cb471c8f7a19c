"""Tests of ``aiopyramid_ng.asgi``: the ASGI server boundary, in-process."""
