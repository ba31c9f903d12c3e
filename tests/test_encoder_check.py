"""Encoder options are tried before any work: a ``--preset`` or ``-e`` value the encoder refuses,
and an ``-e`` option it does not know, are usage errors (exit 2) naming the flag, also in a dry
run, instead of a failure after the GPU work (or, for an unknown option, silence)."""

from __future__ import annotations

import pytest
from media_factory import make_image, make_video

from seedvr_cli.cli import main
from seedvr_cli.errors import UsageError
from seedvr_cli.media.encoders import check_image_options, check_video_encoding
from seedvr_cli.media.settings import OutputSettings


def _check(**settings) -> None:
    output = OutputSettings(**settings)
    path = "out.mov" if output.codec == "prores" else "out.mp4"
    check_video_encoding(output.encoding_for(path, deep=False, alpha=False), output)


@pytest.mark.parametrize(("settings", "words"), [
    ({"preset": "foo"}, ["--preset foo: libx264 refuses it", "invalid preset 'foo'"]),
    ({"encoder_options": {"tune": "flim"}}, ["-e tune=flim: libx264 refuses it", "invalid tune 'flim'"]),
    ({"encoder_options": {"crf": "abc"}}, ["-e crf=abc: libx264 refuses it", "crf"]),
    ({"codec": "h265", "preset": "foo"}, ["--preset foo: libx265 refuses it"]),
    ({"codec": "av1", "preset": "99"}, ["--preset 99: libsvtav1 refuses it", "out of range"]),
    # The culprit among several choices is named, not all of them.
    ({"preset": "slow", "encoder_options": {"tune": "film", "g": "x"}}, ["-e g=x: libx264 refuses it"]),
])  # fmt: skip
def test_refused_values_name_the_flag(settings, words, capfd):
    with pytest.raises(UsageError) as error:
        _check(**settings)
    message = str(error.value)
    for word in words:
        assert word in message
    assert "ffmpeg -h encoder=" in message and "\n" not in message
    assert capfd.readouterr().err == ""  # libx264's own complaint is kept off the terminal


@pytest.mark.parametrize(("settings", "flag"), [
    ({"encoder_options": {"foo": "bar"}}, "-e foo=bar: libx264 has no such option"),
    ({"codec": "prores", "encoder_options": {"tune": "film"}}, "-e tune=film: prores_ks has no such option"),
])  # fmt: skip
def test_unknown_options_are_not_ignored(settings, flag):
    with pytest.raises(UsageError, match=flag):
        _check(**settings)


@pytest.mark.parametrize("settings", [
    {"preset": "veryslow", "crf": 20, "encoder_options": {"tune": "film", "g": "48"}},
    {"codec": "h265", "preset": "slow", "encoder_options": {"x265-params": "aq-mode=3"}},
    {"codec": "av1", "preset": "8", "encoder_options": {"svtav1-params": "tune=0"}},
    {"codec": "prores", "encoder_options": {"vendor": "apl0"}},
])  # fmt: skip
def test_good_choices_pass(settings):
    _check(**settings)


def test_image_options_are_checked_against_the_image_encoder():
    check_image_options(".png", OutputSettings(encoder_options={"compression_level": "9"}), deep=False, alpha=False)
    with pytest.raises(UsageError, match="-e quality=90: png has no such option"):
        check_image_options(".png", OutputSettings(encoder_options={"quality": "90"}), deep=False, alpha=False)


def _upscale(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", *args])
    return exit_info.value.code, capsys.readouterr().err


def test_cli_refuses_a_bad_preset_before_loading_models(tmp_path, capsys):
    """Not even the model files are looked at: the missing model would otherwise be the error."""
    clip = make_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    for extra in ([], ["--dry-run"]):
        code, err = _upscale(capsys, str(clip), "-o", str(tmp_path / "out.mp4"), "--preset", "foo",
                             "--model", str(tmp_path / "no-such-dit.safetensors"), "--no-download",
                             "--device", "cpu", *extra)
        assert code == 2, err
        assert err.startswith("error: --preset foo: libx264 refuses it") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


def test_cli_checks_the_encoder_each_input_gets(tmp_path, capsys):
    """A 10-bit source is written with h265, whose tunes differ from h264's: the check follows the input."""
    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "plain.mp4", frames=5, width=64, height=48)
    code, err = _upscale(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-e", "tune=film", "--dry-run")
    assert code == 0, err
    make_video(tmp_path / "in" / "deep.mkv", frames=5, width=64, height=48, codec="libx265", pix_fmt="yuv420p10le")
    code, err = _upscale(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-e", "tune=film", "--dry-run")
    assert code == 2 and "-e tune=film: libx265 refuses it" in err, err


def test_cli_refuses_an_unknown_image_option(tmp_path, capsys):
    image = tmp_path / "photo.png"
    make_image(image, width=32, height=32)
    code, err = _upscale(capsys, str(image), "-o", str(tmp_path / "big.png"), "-e", "quality=90", "--dry-run")
    assert code == 2 and "-e quality=90: png has no such option" in err, err
