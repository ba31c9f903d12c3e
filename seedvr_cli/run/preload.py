"""The modules a SeedVR2 worker imports before its first chunk, for the fork server to import once.

Kept apart from the modules it names, so that the CLI can hand the list over before it imports
torch itself.
"""

WORKER_MODULES = (
    "torch",
    "numpy",
    "av",
    "seedvr_cli.parallel.worker",
    "seedvr_cli.run.processor",
    "seedvr_cli.models.dit",
    "seedvr_cli.models.vae",
    "seedvr_cli.media.reader",
)
