"""Media I/O with PyAV: probe, frame-accurate readers, writers, input discovery and output naming."""
