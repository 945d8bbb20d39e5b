"""The quickstart example runs end to end and prints its comparison table."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
ROWS = ("BCE", "BCE + pos_weight", "focal a=0.25 g=2")
COLUMNS = 6  # test BCE, ROC-AUC, recall, precision, flagged, train s


def test_quickstart_prints_three_rows_of_finite_numbers():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "20", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = {}
    for line in result.stdout.splitlines():
        name, *numbers = line.rsplit(maxsplit=COLUMNS) or [""]
        if name in ROWS:
            table[name] = [float(n) for n in numbers]
    assert sorted(table) == sorted(ROWS), result.stdout
    for name, numbers in table.items():
        assert len(numbers) == COLUMNS and all(map(math.isfinite, numbers)), (name, numbers)
        test_bce, auc, recall, precision, _, _ = numbers
        assert test_bce > 0 and 0 <= auc <= 1 and 0 <= recall <= 1 and 0 <= precision <= 1
