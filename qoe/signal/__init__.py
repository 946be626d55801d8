"""The test signal, the measurement backbone: what publishers send and viewers read back.

Video frames carry a :class:`FrameCode` (sequence number and capture wall-clock time) and a
marker that flashes at every whole second of sender time; the audio carries a tone burst at
the same instants, one frequency per participant, each followed by an identity burst whose
delay names the second (:func:`identify_markers` reads it back). A viewer reads
glass-to-glass latency from the code, frame drops and repeats from sequence gaps, and the A/V
offset from tone onset (:class:`ToneOnsetDetector`) against flash onset
(:class:`FlashDetector`) of the same second.
"""

from __future__ import annotations

from qoe.signal.audio import (
    COHOST_TONE_HZ,
    HOST_TONE_HZ,
    IDENTITY_MODULUS,
    RAMP_SECONDS,
    SAMPLE_RATE,
    TONE_SECONDS,
    SignalAudio,
    identity_delay,
)
from qoe.signal.code import (
    BLACK,
    DROP_FLAG,
    DROP_SHOW_SECONDS,
    NONCE_MAX,
    TICKS_PER_SECOND,
    WHITE,
    FrameCode,
    drop_of,
    drop_tag,
    nonce_of,
    paint_code,
    read_code,
    unwrap_ticks,
)
from qoe.signal.detect import FlashDetector, ToneOnsetDetector, null_window
from qoe.signal.identity import AudioMarker, identify_markers
from qoe.signal.video import (
    BACKGROUND,
    FLASH_SECONDS,
    MARKER_SLOTS,
    SignalVideo,
    flash_level,
    marker_rect,
)

__all__ = [
    "BACKGROUND",
    "BLACK",
    "COHOST_TONE_HZ",
    "DROP_FLAG",
    "DROP_SHOW_SECONDS",
    "FLASH_SECONDS",
    "HOST_TONE_HZ",
    "IDENTITY_MODULUS",
    "MARKER_SLOTS",
    "NONCE_MAX",
    "RAMP_SECONDS",
    "SAMPLE_RATE",
    "TICKS_PER_SECOND",
    "TONE_SECONDS",
    "WHITE",
    "AudioMarker",
    "FlashDetector",
    "FrameCode",
    "SignalAudio",
    "SignalVideo",
    "ToneOnsetDetector",
    "drop_of",
    "drop_tag",
    "flash_level",
    "identify_markers",
    "identity_delay",
    "marker_rect",
    "nonce_of",
    "null_window",
    "paint_code",
    "read_code",
    "unwrap_ticks",
]
