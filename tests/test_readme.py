"""The README stays true: its Python runs, and CI runs exactly its test command."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _seconds(text: str, pattern: str) -> int:
    """The ``about N s`` that follows ``pattern`` in ``text`` (the first, within 200 characters)."""
    match = re.search(pattern + r".{0,200}?about (\d+) s", text, re.S)
    assert match, pattern
    return int(match.group(1))


def test_every_run_time_is_said_the_same_everywhere():
    """A run time is one measured figure: the README, the docstrings and the notebook agree."""
    examples = ROOT / "examples"
    spam = (examples / "spam.py").read_text()
    main_job = _seconds(README, r"Set up and run the main job")
    assert main_job == _seconds(spam, r"python examples/spam.py  ")
    notebook = json.loads((examples / "quickstart.ipynb").read_text())
    intro = "".join(notebook["cells"][0]["source"])
    assert _seconds(README, r"The tests execute every cell on CPU") == _seconds(intro, "Runtime")
    quickstart = (examples / "quickstart.py").read_text()
    assert _seconds(README, r"`python examples/quickstart.py` on the same machine") == (
        _seconds(quickstart, r"Run from the repository root")
    )
    segmentation = (examples / "segmentation.py").read_text()
    timed_again = re.search(r"\((\d+) s when timed again", README)
    assert timed_again and int(timed_again.group(1)) == (
        _seconds(segmentation, r"python examples/segmentation.py  ")
    )
