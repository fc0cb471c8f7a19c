"""Tests of ``aiopyramid_ng.broadcast``'s transports, against real servers where they need one."""
