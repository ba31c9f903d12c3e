"""How worker processes are started: from a fork server that has already imported torch.

A spawned worker is a fresh interpreter that imports torch and the models before it can touch its
GPU: seconds per worker (about 3 s on the H200 machine, more on a cold disk), paid on the critical
path of every run. On Linux the workers are instead forked from multiprocessing's fork server,
which imports them once. Which modules that is, the application says
(``start_worker_server(preload=...)``): the engine knows no application module. It starts the
server early, so that the server's imports overlap the parent's own start-up (argument parsing,
probing the inputs, resolving the models).

Forking is safe here because the server never initialises CUDA (importing torch does not) and
runs no torch thread pools; every worker still sets its own ``CUDA_VISIBLE_DEVICES`` before its
first CUDA call. Elsewhere (macOS, Windows) workers are spawned as before.

Only the standard library is imported here, so the CLI can start the server before importing torch.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from multiprocessing.context import BaseContext

# The fork server survives only ImportError from a preloaded module, so it preloads one module of
# ours that imports the application's list itself and survives anything.
_PRELOADER = "seedvr_cli.parallel.preload"
# How the list reaches that module: the server inherits this process's environment.
PRELOAD_ENV = "SEEDVR_WORKER_PRELOAD"

_server_failed = False  # the fork server could not start here (e.g. no room for its socket): spawn


def uses_fork_server() -> bool:
    return (not _server_failed and sys.platform.startswith("linux")
            and "forkserver" in multiprocessing.get_all_start_methods())


def worker_context() -> BaseContext:
    """The multiprocessing context that starts workers (never plain fork: the parent may hold CUDA)."""
    if uses_fork_server():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([_PRELOADER])
        return context
    return multiprocessing.get_context("spawn")


def start_worker_server(preload: Sequence[str] = ()) -> None:
    """Start the fork server in the background now (returns at once; no-op where workers are spawned).

    ``preload``: modules every worker needs (torch, the models), imported once by the server. The
    server lives until this process exits; starting it again is a no-op.
    """
    global _server_failed
    if not uses_fork_server():
        return
    from multiprocessing import forkserver

    if preload:
        os.environ[PRELOAD_ENV] = ",".join(preload)
    worker_context()  # the preload list must be set before the server starts
    try:
        forkserver.ensure_running()
    except OSError:
        # Its socket lives in the temp folder; where that fails, spawned workers still work.
        _server_failed = True
