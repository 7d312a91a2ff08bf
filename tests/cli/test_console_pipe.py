"""Output that survives a pipe: off a terminal, tables print whole (no cell cut to an ellipsis) and a run prints a line an epoch."""
from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from trainer.console import print_table, records_table


def _piped_console() -> Console:
    return Console(file=io.StringIO(), width=80, force_terminal=False)


def test_a_table_wider_than_80_columns_prints_whole_off_a_terminal():
    out = _piped_console()
    name = "a_run_name_that_is_long_" * 6
    print_table(records_table("runs", [{"name": name, "status": "completed", "test accuracy": 0.9123}]), out)
    text = out.file.getvalue()
    assert name in text and "…" not in text
    assert out.width == 80  # the console is left as it was


def test_a_table_on_a_terminal_is_still_fitted_to_the_window():
    out = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    print_table(records_table("runs", [{"name": "x" * 200}]), out)
    assert max(len(line) for line in out.file.getvalue().splitlines()) <= 60


def test_trainer_list_piped_into_another_program_keeps_every_parameter_whole(subprocess_env):
    done = subprocess.run([sys.executable, "-m", "trainer", "list", "losses"], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    assert "from_logits=False" in done.stdout and "label_smoothing=0.0" in done.stdout


def test_the_run_display_prints_one_unwrapped_line_per_epoch_off_a_terminal():
    from trainer.cli.progress import RunProgress

    out = _piped_console()
    progress = RunProgress(out)
    progress.on_epoch_start(1, 2, 10)
    for step in range(1, 11):
        progress.on_progress(step, {"loss": 0.5})
    logs = {f"metric_with_a_long_name_{k}": 0.123456 for k in range(8)}
    progress.on_epoch_end(1, logs)
    lines = [line for line in out.file.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("epoch 1/2") and "metric_with_a_long_name_7 0.1235" in lines[0]


def test_trainer_runs_writes_every_wall_time_with_one_decimal(cli, tmp_path):
    import json

    import yaml

    from tests.conftest import tiny_config

    for name, seconds in (("long", 148.84), ("short", 12.4250)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(tiny_config(None)))
        (run / "metrics.json").write_text(json.dumps({"status": "completed", "epochs_completed": 1, "wall_seconds": seconds}))
    result = cli("runs", tmp_path)
    assert result.exit_code == 0, result.output
    assert "148.8" in result.text and "12.4 " in result.text + " " and "12.4250" not in result.text
