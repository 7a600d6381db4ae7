"""The safetensors file format, read and written with NumPy alone (no torch, no safetensors).

A file is an 8-byte little-endian header length N, N bytes of JSON (padded
with spaces), then the tensors' bytes: the header maps each name to its
dtype, shape and [begin, end) byte offsets into that data, C order, little
endian, and may hold string metadata under "__metadata__"
(https://huggingface.co/docs/safetensors). Each bad file is a `UserError`
that names it and says what is wrong: too short for the header or the
tensors it promises (a cut download), or not a safetensors file at all.
"""
import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from jaxmm.errors import UserError

# The dtypes weights come in: safetensors' name -> NumPy's, and back.
DTYPES = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_METADATA = "__metadata__"
# A header longer than this is not one: real ones take a few hundred bytes per tensor.
_MAX_HEADER_BYTES = 100 << 20


def _header(path: str, size: int) -> tuple[dict, int]:
  """(the header's tensor entries, the offset of the data) of the file at `path` of `size` bytes."""
  with open(path, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise UserError(f"{path} is truncated: it holds {size} bytes, fewer than the 8 of a "
                      "safetensors header's length; download or write it again")
    (length,) = struct.unpack("<Q", prefix)
    if length > _MAX_HEADER_BYTES:
      raise UserError(f"{path} is not a safetensors file (its first 8 bytes give a header of "
                      f"{length} bytes); pass the .safetensors weights file")
    if 8 + length > size:
      raise UserError(f"{path} is truncated: its header promises {length} bytes but the file "
                      f"holds {size - 8} after the length; download or write it again")
    try:
      header = json.loads(f.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise UserError(f"{path} is not a safetensors file (its header is not JSON: {e}); pass "
                      "the .safetensors weights file") from None
  if not isinstance(header, dict):
    raise UserError(f"{path} is not a safetensors file (its header is not a JSON object)")
  header.pop(_METADATA, None)
  return header, 8 + length


def _check_entry(path: str, name: str, entry, data_bytes: int) -> tuple[np.dtype, tuple, int, int]:
  """(dtype, shape, begin, end) of tensor `name`'s header `entry`, checked against the file."""
  try:
    dtype_name, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
  except (KeyError, TypeError, ValueError):
    raise UserError(f"{path} is not a safetensors file: the header entry of {name!r} is "
                    f"{entry!r}") from None
  if dtype_name not in DTYPES:
    raise UserError(f"{path} holds {name!r} as {dtype_name}; jaxmm reads weights of dtype "
                    f"{', '.join(DTYPES)}: convert the file to one of them")
  if end > data_bytes:
    raise UserError(f"{path} is truncated: tensor {name!r} ends at byte {end} of its data, which "
                    f"holds {data_bytes} bytes; download or write it again")
  if end - begin != math.prod(shape) * DTYPES[dtype_name].itemsize or begin < 0:
    raise UserError(f"{path} is not a valid safetensors file: {name!r} spans bytes "
                    f"[{begin}, {end}) for a {dtype_name} tensor of shape {list(shape)}")
  return DTYPES[dtype_name], shape, begin, end


def read(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the safetensors file at `path`, name -> array in its stored dtype, in the
  header's order. Raises `UserError` for a missing, truncated or malformed file."""
  if not os.path.isfile(path):
    raise UserError(f"{path} is not a file; pass the path of a .safetensors weights file")
  size = os.path.getsize(path)
  header, data_start = _header(path, size)
  entries = {
      name: _check_entry(path, name, entry, size - data_start) for name, entry in header.items()
  }
  data = np.memmap(path, np.uint8, mode="r", offset=data_start) if size > data_start else None
  tensors = {}
  for name, (dtype, shape, begin, end) in entries.items():
    tensors[name] = data[begin:end].view(dtype).reshape(shape).copy() if end > begin else np.zeros(
        shape, dtype)
  del data  # closes the mapping: every tensor above is a copy
  return tensors


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  """Writes `tensors` (name -> array of a dtype in DTYPES) to `path` as a safetensors file, in
  their order, with string `metadata`."""
  header, offset = {}, 0
  if metadata:
    header[_METADATA] = dict(metadata)
  for name, array in tensors.items():
    if array.dtype not in _NAMES:
      raise ValueError(f"{name}: dtype {array.dtype} is none of {list(DTYPES.values())}")
    header[name] = dict(dtype=_NAMES[array.dtype],
                        shape=list(array.shape),
                        data_offsets=[offset, offset + array.nbytes])
    offset += array.nbytes
  text = json.dumps(header, separators=(",", ":")).encode("utf-8")
  text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for array in tensors.values():
      f.write(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())
