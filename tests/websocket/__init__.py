"""Tests of ``aiopyramid_ng.websocket``: the WebSocket view API, in-process."""
