"""The ``mimimi`` console script: every subcommand reaches its module's CLI, bad ones get one line."""
import subprocess
import sys

import pytest

from mimimi import cli


def test_usage_lists_every_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_unknown_command_is_one_line(capsys):
    assert cli.main(["bogus"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bogus" in err and "score" in err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_is_its_module_cli(name):
    """``--help`` of each: exits 0 and shows the module's own options (its argparse ran, not ours)."""
    proc = subprocess.run([sys.executable, "-m", "mimimi.cli", name, "--help"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "--" in proc.stdout.split("usage:", 1)[1]


def test_a_command_runs_with_its_arguments(synth_root):
    proc = subprocess.run([sys.executable, "-m", "mimimi.cli", "index", str(synth_root)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "valve" in proc.stdout, proc.stderr
