"""The README's commands are the ones CI runs, and the commands it shows exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip() for block in _bash_blocks(readme) for line in block.splitlines() if "pytest" in line
    ]
    assert commands, "README names no pytest command"
    test_command = commands[0]
    assert test_command in [line.strip() for line in ci.splitlines()], (
        f".ci/run does not run the README's test command {test_command!r}"
    )


def test_readme_quick_start_installs_cpu_torch_and_runs_the_arena():
    readme = (ROOT / "README.md").read_text()
    first = _bash_blocks(readme)[0]
    assert "torch==" in first, "the quick start must pin the torch build that installs fast on CPU"
    assert "recurrences arena" in first
