"""scripts/parity.py's pipeline kind: every output of the shared pipeline fixtures within tolerance."""

from __future__ import annotations

from conftest import shared_path

from seedvr_cli.parity import detect_kind
from seedvr_cli.parity import pipeline as pipeline_parity


def test_pipeline_fixture_dir_is_detected():
    assert detect_kind(shared_path("fixtures", "pipeline")) == "pipeline"


def test_all_pipeline_fixture_outputs_pass():
    results = pipeline_parity.run(shared_path("fixtures", "pipeline"))
    failed = [f"{r.case}/{r.output}: {r.max_abs:.3e} {r.note}" for r in results if not r.passed]
    assert not failed, failed
    names = {r.case.split("[")[0] for r in results}
    # Every kind of case ran, the e2e scenarios with our own VAE too.
    assert {"sampler", "condition", "color/small", "blend_weights", "pad_video_temporal"} <= names
    assert any(r.case.endswith("[own VAE]") and r.output == "output_thwc" for r in results)
    assert len(results) > 100
