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
    for name in ("sentiment", "segmentation"):
        script = (examples / f"{name}.py").read_text()
        section = README.split(f"### {name.capitalize()} (`examples/{name}.py`)", 1)[1]
        assert _seconds(section, r"The default run, baseline included, takes") == (
            _seconds(script, rf"python examples/{name}.py  ")
        ), name


def test_the_example_tables_are_the_recorded_runs():
    """Each example's table rows and baseline row are the runs recorded with their machine."""
    record = json.loads((ROOT / "benchmarks/results/examples_cpu_2026-12-05.json").read_text())
    runs = record["runs"]
    classifier = ("roc_auc", "average_precision", "f1", "log_loss", "ece")
    tables = {
        "Spam": {
            "`bce`": "spam",
            "`pos_weight`": "spam --loss pos_weight",
            "`focal`": "spam --loss focal",
            "`asymmetric`": "spam --loss asymmetric",
        },
        "Sentiment": {"`bce`": "sentiment"},
        "Segmentation": {"`lovasz` (default)": "segmentation"},
    }
    for title, rows in tables.items():
        name = title.lower()
        section = README.split(f"### {title} (`examples/{name}.py`)", 1)[1].split("\n### ")[0]
        cells = {
            line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines()
            if line.startswith("| ")
        }
        keys = ("iou", "dice") if name == "segmentation" else classifier
        for first, run in rows.items():
            assert cells[first] == [f"{runs[run]['test'][k]:.3f}" for k in keys], (title, first)
        baseline = runs[name]["baseline"]
        (row,) = [cell for cell in cells if cell.startswith("baseline: ")]
        assert row.startswith(f"baseline: `{baseline['model']}`"), row
        assert cells[row] == [f"{baseline['test'][k]:.3f}" for k in keys], (title, row)
    # The spam example over five splits, as the README quotes it.
    seeds = ["spam"] + [f"spam --seed {i}" for i in range(1, 5)]
    text = " ".join(README.split())
    for scores in (
        [runs[s]["test"]["roc_auc"] for s in seeds],
        [runs[s]["baseline"]["test"]["roc_auc"] for s in seeds],
    ):
        quoted = ", ".join(f"{v:.3f}" for v in scores[:-1]) + f" and {scores[-1]:.3f}"
        assert f"{quoted} (mean {sum(scores) / len(scores):.3f})" in text, quoted
