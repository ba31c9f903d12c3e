"""The application: plan each input, run its chunks on the worker engine, write the outputs.

``upscale.run_upscale(spec, reporter)`` is what ``seedvr upscale`` calls and
``assemble.assemble_parts`` what ``seedvr assemble`` calls. The modules split the concerns:
``plan`` (sizes, windows and chunks of one input, the VRAM estimate), ``models`` (which files
the workers load), ``sources``/``outputs`` (how workers read an input and how finished frames
reach the writer), ``processor`` (what a worker does with a chunk), ``stats`` (per-device numbers
for the summary), ``outcome`` (what the reporter is told). The numerical path itself is
``seedvr_cli.pipeline``; the worker engine is ``seedvr_cli.parallel``.
"""
