"""Carrying a source file's audio and subtitle streams into an output file next to new video.

Streams are copied packet for packet when the output container can hold their codec; audio that it
cannot hold is re-encoded (to AAC, else Opus, else FLAC: the first the container takes) and
subtitles that it cannot hold are dropped, each with a note for the user. Packets are pulled
from the source in step with the video being written, so the output is interleaved and nothing
is buffered beyond a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

# How far ahead of the video the copied streams may run, in seconds.
_LEAD_SECONDS = 0.5


@dataclass
class _Route:
    source_stream: object
    output_stream: object
    reencode: bool


@dataclass
class Passthrough:
    """Routes from the source's audio/subtitle streams to streams of ``output``; call ``pump`` as video advances."""

    source_path: Path
    output: object
    keep_audio: bool = True
    keep_subtitles: bool = True
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import av

        self._container = av.open(str(self.source_path), metadata_errors="replace")
        self._routes: dict[int, _Route] = {}
        supported = self.output.supported_codecs
        wanted = []
        if self.keep_audio:
            wanted += list(self._container.streams.audio)
        if self.keep_subtitles:
            wanted += list(self._container.streams.subtitles)
        for stream in wanted:
            codec = stream.codec_context.codec.canonical_name
            if codec in supported:
                out_stream = self.output.add_stream_from_template(stream)
                self._routes[stream.index] = _Route(stream, out_stream, reencode=False)
            elif stream.type == "audio":
                target = next((c for c in ("aac", "opus", "flac") if c in supported), None)
                if target is None:
                    self.notes.append(f"audio stream {stream.index} ({codec}) dropped: {self.output.format.name} holds no audio codec we encode")
                    continue
                ctx = stream.codec_context
                out_stream = self.output.add_stream(target, rate=ctx.sample_rate)
                out_ctx = out_stream.codec_context
                # An unordered "N channels" layout is refused by encoders; use the usual one for N.
                unordered = ctx.layout.name.endswith("channels")
                out_ctx.layout = _USUAL_LAYOUTS.get(ctx.channels, ctx.layout) if unordered else ctx.layout
                if out_ctx.format is None and out_ctx.codec.audio_formats:
                    out_ctx.format = out_ctx.codec.audio_formats[0]
                if stream.language:
                    out_stream.language = stream.language
                self._routes[stream.index] = _Route(stream, out_stream, reencode=True)
                self.notes.append(f"audio stream {stream.index} ({codec}) re-encoded to {target}: {self.output.format.name} cannot hold {codec}")
            else:
                self.notes.append(f"subtitle stream {stream.index} ({codec}) dropped: {self.output.format.name} cannot hold {codec}; use .mkv to keep it")
        self._packets = self._container.demux(*[route.source_stream for route in self._routes.values()]) if self._routes else iter(())
        self._pending = None
        self._done = not self._routes

    def pump(self, video_seconds: float | None) -> None:
        """Mux source packets up to ``video_seconds`` (plus a small lead); ``None`` muxes the rest."""
        limit = None if video_seconds is None else video_seconds + _LEAD_SECONDS
        while not self._done:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                self._done = True
                break
            stamp = packet.dts if packet.dts is not None else packet.pts
            if limit is not None and stamp is not None and float(stamp * packet.time_base) > limit:
                self._pending = packet
                return
            self._route(packet)
        if video_seconds is None:
            self._flush_encoders()

    def _route(self, packet) -> None:
        if packet.size == 0:
            return  # the demuxer's end-of-stream marker; decoders are flushed in _flush_encoders
        route = self._routes[packet.stream.index]
        if not route.reencode:
            packet.stream = route.output_stream
            self.output.mux(packet)
            return
        for frame in route.source_stream.codec_context.decode(packet):
            frame.pts = None  # let the encoder number samples continuously
            self.output.mux(route.output_stream.encode(frame))

    def _flush_encoders(self) -> None:
        for route in self._routes.values():
            if route.reencode:
                for frame in route.source_stream.codec_context.decode(None):
                    frame.pts = None
                    self.output.mux(route.output_stream.encode(frame))
                self.output.mux(route.output_stream.encode(None))

    def close(self) -> None:
        self._container.close()

