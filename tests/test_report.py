"""What ``seedvr upscale`` tells the user while it runs: stages, elapsed time, ETA, the bar's label,
plurals, ``--verbose`` stage times, and a clean terminal after Ctrl-C. Driven with made-up engine
events and a fake clock, so no model is loaded."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from seedvr_cli.cli import report
from seedvr_cli.cli.report import TextReporter, bar_label, describe_plan
from seedvr_cli.media.discovery import Job
from seedvr_cli.parallel.progress import ProgressEvent
from seedvr_cli.run.outcome import RunSummary
from seedvr_cli.run.plan import InputPlan

JOB = Job("/home/someone/footage/2026/holiday/a very long folder name/clip.mp4", "/tmp/out.mp4", "video")


def _plan(frames: int = 45, windows: int = 9, chunks: int = 9) -> InputPlan:
    return InputPlan(frames=frames, first_frame=0, input_size=(120, 212), output_size=(64, 112), model_size=(64, 128),
                     fps="25", windows=windows, chunks=chunks, deep=False, alpha=False, estimated_vram_gib=None)


def _event(kind: str, done: int = 0, written: int = 0, chunks: int = 0, message: str = "") -> ProgressEvent:
    # The engine's own fps and ETA count the model loading as work; the reporter must not show them.
    return ProgressEvent(kind, done, written, 45, chunks, 9, fps=0.01, eta_s=9999.0, elapsed_s=0.0, message=message)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(report.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def err(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(report, "console_err", Console(file=buffer, width=120, force_terminal=False))
    return buffer


def test_text_log_names_each_stage_then_gives_elapsed_and_an_eta_from_the_first_window(clock, err):
    reporter = TextReporter(interactive=False)
    reporter.job_started(0, 1, JOB, _plan())
    reporter.progress(_event("start"))
    assert "loading models ..." in err.getvalue()
    clock[0] += 70  # the models take 70 s: nothing is upscaled yet, and no ETA is guessed
    reporter.progress(_event("ready", message="cpu:0 ready after 70.0 s (models 69.0 s)"))
    assert "first window ... (elapsed 01:10)" in err.getvalue()
    assert "ready after" not in err.getvalue()  # device start-up only with --verbose
    clock[0] += 10  # one window of 5 frames in 10 s: 0.5 fps, 40 frames left
    reporter.progress(_event("chunk", done=5, chunks=1))
    line = err.getvalue().splitlines()[-1]
    assert line == "  5/45 frames, 0.50 fps, elapsed 01:20, ETA 01:20", line
    clock[0] += 80
    reporter.progress(_event("chunk", done=45, written=40, chunks=9))
    assert "encoding ..." in err.getvalue()
    reporter.progress(_event("finished", done=45, written=45, chunks=9))
    assert err.getvalue().count("45/45 frames") == 1


def test_second_job_of_a_run_starts_at_its_first_window(clock, err):
    reporter = TextReporter(interactive=False)
    reporter.job_started(0, 2, JOB, _plan())
    reporter.progress(_event("start"))
    reporter.progress(_event("ready"))
    reporter.progress(_event("finished", done=45, written=45, chunks=9))
    reporter.job_started(1, 2, JOB, _plan())
    reporter.progress(_event("start"))
    assert err.getvalue().count("loading models") == 1
    assert err.getvalue().count("first window") == 2


def test_bar_is_labelled_with_the_file_name(clock, monkeypatch):
    assert bar_label(JOB.input) == "clip.mp4"
    long_name = "A Rather Long Documentary Title (2019) [1080p x264 AAC] part 3.mkv"
    label = bar_label("/media/" + long_name)
    assert len(label) == 32 and label.startswith("A Rather Long") and label.endswith("part 3.mkv")

    buffer = io.StringIO()
    monkeypatch.setattr(report, "console_err", Console(file=buffer, width=150, force_terminal=True))
    reporter = TextReporter(interactive=True)
    reporter.job_started(0, 1, JOB, _plan())
    reporter.progress(_event("start"))
    reporter._progress.refresh()
    bar = buffer.getvalue().split("\n")[-1]
    reporter.close()
    assert "clip.mp4" in bar and "loading models" in bar and "0/45" in bar and "ETA --:--" in bar
    assert "folder name" not in bar  # the path is not cut from the left into the label


def test_one_of_each_reads_in_the_singular():
    text = describe_plan(Job("a.png", "b.png", "image"), _plan(frames=1, windows=1, chunks=1))
    assert "1 frame " in text and "1 window in 1 chunk" in text
    text = describe_plan(JOB, _plan(frames=45, windows=9, chunks=3))
    assert "45 frames" in text and "9 windows in 3 chunks" in text


def test_verbose_summary_gives_stage_times_and_peak_vram(err):
    summary = RunSummary([], 10.0, {"cuda:1": 20.25, "cuda:0": 12.5}, {"dit": 6.0, "decode": 2.0})
    TextReporter(interactive=False).summary(summary)
    assert "stages" not in err.getvalue()
    TextReporter(interactive=False, verbose=True).summary(summary)
    text = err.getvalue()
    assert "stages (summed over devices): dit 6.0 s (75%), decode 2.0 s (25%)" in text
    assert "peak VRAM: cuda:0 12.50 GiB, cuda:1 20.25 GiB" in text
    summary.peak_phase = {"cuda:1": "decode"}
    TextReporter(interactive=False, verbose=True).summary(summary)
    assert "peak VRAM: cuda:0 12.50 GiB, cuda:1 20.25 GiB (in the decode)" in err.getvalue()


def test_ctrl_c_takes_the_bar_down_and_gives_the_cursor_back(tmp_path, monkeypatch):
    from media_factory import make_video

    from seedvr_cli.cli import main

    buffer = io.StringIO()
    monkeypatch.setattr(report, "console_err", Console(file=buffer, width=120, force_terminal=True))

    def interrupted(spec, reporter):
        reporter.job_started(0, 1, JOB, _plan())
        reporter.progress(_event("start"))
        raise KeyboardInterrupt

    monkeypatch.setattr("seedvr_cli.run.upscale.run_upscale", interrupted)
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(clip), "--devices", "cpu"])
    text = buffer.getvalue()
    assert exit_info.value.code == 130
    hide, show = "\x1b[?25l", "\x1b[?25h"
    assert hide in text and text.rfind(show) > text.rfind(hide)  # the cursor is visible again
    assert text.rfind("interrupted") > text.rfind(show)  # the last word comes after the bar is gone
