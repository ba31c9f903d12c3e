"""Packaging: presets readable from an installed wheel, kernels installed under a project-specific name."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from seedvr_cli.cli import main
from seedvr_cli.presets import PRESET_KEYS, load_preset, preset_names

REPO = Path(__file__).resolve().parents[1]


def test_every_preset_loads_with_known_keys():
    names = preset_names()
    assert {"default", "quality", "sharp"} <= set(names)
    for name in names:
        preset = load_preset(name)
        assert preset.description and preset.settings
        assert set(preset.settings) <= PRESET_KEYS


def test_profile_fills_only_flags_not_given(tmp_path, capsys):
    from media_factory import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=10)

    def planned_windows(*flags: str) -> int:
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", str(clip), "--dry-run", "--log-format", "json", *flags])
        assert exit_info.value.code == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return next(e for e in events if e["event"] == "job_started")["plan"]["windows"]

    assert planned_windows() == 1  # default batch 21 covers 10 frames
    assert planned_windows("--profile", "quality") == 1  # batch 33
    # The explicit flag wins; overlap 4 and 4 lead-in frames still come from the profile: 14 frames in 9s, step 5.
    assert planned_windows("--profile", "quality", "--batch-size", "9") == 2


def test_unknown_profile_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", "x.mp4", "--profile", "nope", "--dry-run"])
    assert exit_info.value.code == 2
    assert "default, quality, sharp" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the wheel")
def test_wheel_carries_presets_and_kernels_under_their_own_names(tmp_path):
    subprocess.run(["uv", "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("seedvr_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "seedvr_cli/configs/presets/default.json" in names
    assert "seedvr_kernels/__init__.py" in names
    assert not any(name.startswith("kernels/") for name in names)  # a PyPI package owns that name


def test_profile_help_lists_every_installed_preset_with_what_it_does(capsys, monkeypatch):
    from seedvr_cli.presets import preset_descriptions

    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name, description in preset_descriptions().items():  # read from the folder: new presets appear by themselves
        assert f"- {name}: {' '.join(description.split())}" in help_text
    assert "path of your own JSON file" in help_text


def test_profile_may_be_a_file_of_ones_own(tmp_path, capsys):
    from media_factory import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=10)
    mine = tmp_path / "mine.json"
    # Values as a hand-written file may hold them: a number in a string is read like the flag's value.
    mine.write_text(json.dumps({"description": "short windows", "settings": {"batch_size": "5", "temporal_overlap": 1}}))

    def run(*flags: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", str(clip), "--dry-run", "--log-format", "json", *flags])
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err

    code, out, err = run("--profile", str(mine))
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert next(e for e in events if e["event"] == "job_started")["plan"]["windows"] == 3  # 5-frame windows, step 4

    mine.write_text(json.dumps({"settings": {"batch_size": "five"}}))
    code, _, err = run("--profile", str(mine))
    assert code == 2 and f"--profile {mine}: batch_size = 'five'" in " ".join(err.split())
    mine.write_text("{not json")
    code, _, err = run("--profile", str(mine))
    assert code == 2 and "cannot read it as JSON" in err and "Traceback" not in err
    code, _, err = run("--profile", str(tmp_path / "absent.json"))
    assert code == 2 and "no such file" in err
