"""Tests of ``aiopyramid_ng.compat``: each adapted library under interleaved requests."""
