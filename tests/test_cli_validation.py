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


@pytest.mark.parametrize(("output", "alpha"), [("out.png", True), ("out.jpg", False), ("out.mov", True),
                                               ("out.mp4", False)])
def test_alpha_is_only_upscaled_where_the_output_keeps_it(tmp_path, capsys, output, alpha):
    import json

    from media_factory import make_image

    image = tmp_path / "rgba.png"
    make_image(image, width=64, height=64, alpha=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(image), "-o", str(tmp_path / output), "--dry-run", "--log-format", "json"])
    assert exit_info.value.code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert next(e for e in events if e["event"] == "job_started")["plan"]["alpha"] is alpha


def test_json_log_reports_an_early_error_on_stdout(tmp_path, capsys):
    import json

    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(tmp_path / "missing.mp4"), "--log-format", "json"])
    assert exit_info.value.code == 1
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["event"] == "error" and "missing.mp4" in event["message"] and event["exit_code"] == 1


def test_upscale_help_shows_the_defaults_written_into_option_texts(capsys, monkeypatch):
    """Rich reads "[default: ...]" as markup unless escaped; it then vanished and left " ."."""
    from seedvr_cli.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    out = capsys.readouterr().out
    for default in ("[default: 1080]", "[default: 25]", "[default: medium]", "[default: the whole card]",
                    "[default: 2 per worker + 2]"):
        assert default in out, default
    # The stray full stop a vanished default left behind ("in pixels ." at the end of a text).
    assert not [line for line in out.splitlines() if line.rstrip(" │").endswith(" .")]


@pytest.mark.parametrize("flag", ["--scale", "--fps", "--max-vram"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_usage_errors_even_in_a_dry_run(tmp_path, capsys, flag, value):
    from seedvr_cli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(tmp_path / "clip.mp4"), flag, value, "--dry-run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and flag in err and "Traceback" not in err


def test_every_upscale_option_says_its_default(capsys, monkeypatch):
    """Typer shows a default only for options with a value; flags and "none" defaults say theirs in the text."""
    from typer.main import get_command

    from seedvr_cli.cli import app, main

    upscale = get_command(app).commands["upscale"]
    actions = {"help", "list_devices"}  # they do something instead of setting a value
    options, silent = [], []
    for param in upscale.params:
        if param.param_type_name != "option" or param.name in actions:
            continue
        options.append(param.name)
        shown_by_typer = param.show_default is not False and param.default is not None and param.default is not False
        if not shown_by_typer and "\\[default:" not in (param.help or ""):
            silent.append(param.name)
    assert not silent, f"options whose --help gives no default: {silent}"
    # And --help shows them all: one "[default: ...]" per option (wide enough for one line each).
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert capsys.readouterr().out.count("[default:") == len(options)


def test_shell_completion_can_be_shown_and_completes_options_and_profiles(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    seedvr = Path(sys.executable).with_name("seedvr")
    shown = subprocess.run([str(seedvr), "--show-completion", "bash"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "complete -o default -F _seedvr_completion seedvr" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_SEEDVR_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        done = subprocess.run([str(seedvr)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("seedvr ups") == ["upscale"]
    assert "--color-correction" in complete("seedvr upscale --col")
    assert complete("seedvr upscale --profile qual") == ["quality"]

    home = tmp_path / "home"
    home.mkdir()
    installed = subprocess.run([str(seedvr), "--install-completion", "bash"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "HOME": str(home)})
    assert installed.returncode == 0, installed.stderr
    assert "_SEEDVR_COMPLETE" in "".join(p.read_text() for p in home.rglob("*") if p.is_file())


def test_every_memory_setting_has_its_flag_passed_through():
    """A MemorySettings field without an entry in the CLI's list would silently keep its default."""
    from dataclasses import fields

    from seedvr_cli.cli.upscale import _MEMORY_FLAGS
    from seedvr_cli.config import MemorySettings

    assert {f.name for f in fields(MemorySettings)} - {"max_vram_gib", "vram"} == set(_MEMORY_FLAGS)
