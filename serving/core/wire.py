"""Arrays as compact bytes with their shape and dtype, for crossing between the gateway and the stage services.

Between the processes of one server BentoML pickles the call, and the bytes travel as they are; between machines
it sends JSON, and they travel as base64 (a third larger), never as JSON number lists (a uint8 pixel as "255, " is
five bytes, and comes back as int64). Boolean masks travel packed, eight pixels a byte. The receiver gets exactly
the dtype and shape that left.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

# What crosses: photos (uint8), masks (bool), soft masks and maps (float32/float16).
WIRE_DTYPES = frozenset({"uint8", "bool", "float32", "float16"})


class WireArray(BaseModel):
    """One numpy array as bytes: `shape`, `dtype`, and the C-order bytes (bit-packed for bool)."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    shape: tuple[int, ...]
    dtype: str
    data: bytes

    @classmethod
    def of(cls, array: np.ndarray) -> WireArray:
        """Pack `array` (one of `WIRE_DTYPES`)."""
        array = np.asarray(array)
        if array.dtype.name not in WIRE_DTYPES:
            raise ValueError(f"arrays of dtype {array.dtype} do not cross between services; use {sorted(WIRE_DTYPES)}")
        data = np.packbits(array, axis=None) if array.dtype == bool else np.ascontiguousarray(array)
        return cls(shape=array.shape, dtype=array.dtype.name, data=data.tobytes())

    def to_numpy(self) -> np.ndarray:
        """The array as it left: same dtype, same shape (a writable copy)."""
        if self.dtype not in WIRE_DTYPES:
            raise ValueError(f"unknown wire dtype {self.dtype!r}")
        if any(dim < 0 for dim in self.shape):
            raise ValueError(f"wire array shape {self.shape} has a negative dimension")
        count = int(np.prod(self.shape, dtype=np.int64))
        if self.dtype == "bool":
            # unpackbits would pad a short message with zeros or drop a long one's tail: both are refused here.
            if len(self.data) != -(-count // 8):
                raise ValueError(f"wire array holds {len(self.data)} bytes of packed bits for shape {self.shape}")
            bits = np.unpackbits(np.frombuffer(self.data, dtype=np.uint8), count=count)
            return bits.astype(bool).reshape(self.shape)
        array = np.frombuffer(self.data, dtype=self.dtype)
        if array.size != count:
            raise ValueError(f"wire array holds {array.size} values for shape {self.shape}")
        return array.reshape(self.shape).copy()
