"""Views into decoded PyAV frames, without copies where the layout allows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from av import VideoFrame

__all__ = ["luma"]


def luma(frame: VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane of a planar YUV frame as an (height, width) array (a view, no copy).

    Rows are ``line_size`` bytes apart, which may exceed the width (alignment padding).
    """
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]
