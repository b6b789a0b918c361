"""A completed camera request as the fake camera delivers it: one YUV420 buffer (writable, so
a ``pre_callback`` can draw on it before the encoders see it) and its metadata
(``SensorTimestamp`` in ns, ``FrameDuration`` in us), as libcamera reports them on a Pi.

``MappedArray(request, "main").array`` is a 2-D (rows x stride) view of the buffer, the shape
picamera2's MappedArray gives for YUV420 (there a numpy array; here a memoryview, so neither
side needs numpy).

Failure posture: asking for a stream the request does not have raises KeyError, as picamera2.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any


class CompletedRequest:
    def __init__(
        self, buffers: dict[str, bytearray], config: dict[str, Any], metadata: dict[str, Any]
    ):
        self._buffers = buffers
        self.config = config
        self._metadata = metadata

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def buffer(self, name: str) -> bytearray:
        return self._buffers[name]

    def acquire(self) -> None:
        """Reference counting is a no-op: buffers are not recycled by the fake."""

    def release(self) -> None:
        """See :meth:`acquire`."""


class MappedArray:
    def __init__(
        self, request: CompletedRequest, stream: str, reshape: bool = True, write: bool = True
    ):
        self._request = request
        self._stream = stream
        self._reshape = reshape
        self.array: Any = None

    def __enter__(self) -> MappedArray:
        buf = memoryview(self._request.buffer(self._stream))
        if self._reshape:
            stride = self._request.config[self._stream]["stride"]
            buf = buf.cast("B", (len(buf) // stride, stride))
        self.array = buf
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.array = None
