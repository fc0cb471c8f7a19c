"""Without redis-py installed, importing the Redis backend says which extra to install."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO_ROOT


def test_importing_the_backend_without_redis_names_the_extra() -> None:
    # None in sys.modules makes "import redis" fail as if it were not installed.
    program = "import sys; sys.modules['redis'] = None; import aiopyramid_ng.broadcast.redis"
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: A redis:// or rediss://")
    assert "pip install 'aiopyramid_ng[redis]'" in last
