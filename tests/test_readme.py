"""The README's library example runs as written and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs(redis_url: str) -> None:
    example = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None, "README.md has no ```python example"

    env = {**os.environ, "RUNSTREAM_REDIS_URL": redis_url}
    run = subprocess.run(
        [sys.executable, "-c", example.group(1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout == "1 token {'text': '안녕'}\n2 done {'tokens': 1}\n"
