"""One run per output (or per shard of it) at a time; locks die with their process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from seedvr_cli.errors import UserError
from seedvr_cli.parallel.outputlock import OutputLock, fcntl, lock_path

pytestmark = pytest.mark.skipif(fcntl is None, reason="no advisory locks on this platform")


def test_a_second_run_of_the_same_output_is_refused_with_the_holders_pid(tmp_path):
    output = tmp_path / "out.mp4"
    with OutputLock(output):
        assert lock_path(output).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match=rf"out.mp4: another seedvr process \(pid {os.getpid()}\) is working"):
            OutputLock(output).acquire()
    assert not lock_path(output).exists()  # released: the file goes too
    with OutputLock(output):
        pass


def test_shards_lock_their_own_part(tmp_path):
    output = tmp_path / "out.mp4"
    with OutputLock(output, (0, 2)), OutputLock(output, (1, 2)):
        with pytest.raises(UserError):
            OutputLock(output, (1, 2)).acquire()


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    output = tmp_path / "out.mp4"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from seedvr_cli.parallel.outputlock import OutputLock
            OutputLock({str(output)!r}).acquire()
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            OutputLock(output).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert lock_path(output).exists()  # left behind by the kill, yet not held
        with OutputLock(output):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
