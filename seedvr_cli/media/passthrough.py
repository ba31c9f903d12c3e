"""Carrying a source file's audio and subtitle streams into an output file next to new video.

Streams are copied packet for packet when the output container can hold their codec; audio that it
cannot hold is re-encoded (to AAC, else Opus, else FLAC: the first the container takes), starting
at the source's time, and subtitles that it cannot hold are dropped, each with a note for the user.
Packets are pulled from the source in step with the video being written, so the output is
interleaved and nothing is buffered beyond a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

# How far ahead of the video the copied streams may run, in seconds.
_LEAD_SECONDS = 0.5

# FFmpeg lists PCM as storable in MP4, but its MP4 PCM (ISO 23003-5) refuses sources without a
# channel layout (most .mkv/.avi PCM) and few players read it: re-encode there instead.
_MP4_FAMILY = ("mp4", "ipod", "3gp", "3g2", "psp")


@dataclass
class _Route:
    source_stream: object
    output_stream: object
    reencode: bool
    next_sample: int | None = None  # re-encoding: the output pts (in samples) of the next decoded frame


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
        mp4 = self.output.format.name in _MP4_FAMILY
        for stream in wanted:
            codec = stream.codec_context.codec.canonical_name
            if codec in supported and not (mp4 and codec.startswith("pcm_")):
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
                why = (f"MP4 players do not take {codec}; use .mov or .mkv to keep it as it is" if codec in supported
                       else f"{self.output.format.name} cannot hold {codec}")
                self.notes.append(f"audio stream {stream.index} ({codec}) re-encoded to {target}: {why}")
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
            self.output.mux(route.output_stream.encode(_restamped(route, frame)))

    def _flush_encoders(self) -> None:
        for route in self._routes.values():
            if route.reencode:
                for frame in route.source_stream.codec_context.decode(None):
                    self.output.mux(route.output_stream.encode(_restamped(route, frame)))
                self.output.mux(route.output_stream.encode(None))

    def close(self) -> None:
        self._container.close()


def _restamped(route: _Route, frame):
    """Number samples continuously from where the source's audio starts.

    The first frame keeps the source's start time (so audio that starts a second into the file, or
    a file whose timestamps start at 10 s, stays in sync with the copied video timestamps); later
    frames follow sample by sample, so decoder jitter cannot open gaps or overlaps.
    """
    rate = frame.sample_rate
    if route.next_sample is None:
        start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base is not None else 0
        route.next_sample = round(start * rate)
    frame.pts = route.next_sample
    frame.time_base = Fraction(1, rate)
    route.next_sample += frame.samples
    return frame

