"""Bad flags are refused before any file is read or model loaded: one line, exit code 2."""

from __future__ import annotations

import pytest

from seedvr_cli.cli import main


@pytest.mark.parametrize(("flags", "message"), [
    (["--temporal-overlap", "-1"], "--temporal-overlap -1: must be >= 0"),
    (["--prepend-frames", "-2"], "--prepend-frames -2: must be >= 0"),
    (["--fps", "0"], "--fps 0.0: must be a positive frame rate"),
    (["--latent-noise-scale", "1.5"], "--latent-noise-scale 1.5: must be between 0 and 1"),
    (["--shard", "0/2", "--restart"], "cannot be combined with --restart or --no-resume"),
    (["--shard", "0/2", "--no-resume"], "cannot be combined with --restart or --no-resume"),
    (["--resolution", "720", "--scale", "2"], "pass only one"),
])  # fmt: skip
def test_impossible_flags_are_usage_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(tmp_path / "missing.mp4"), *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_list_devices_needs_no_input(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", "--list-devices"])
    assert exit_info.value.code == 0
    assert "cpu" in capsys.readouterr().out
