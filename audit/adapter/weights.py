"""Opening an adapter's weights without trusting them.

- Pickle files (``adapter_model.bin``, torch's zip format) are never unpickled: they are
  recognised by name and magic bytes and refused.
- A git-LFS pointer committed in place of the weights is recognised and reported.
- safetensors files are opened with the safetensors library, which validates the header, the
  offsets and the byte lengths and memory-maps the file without reading tensors. On top of that,
  the caps of :class:`audit.limits.Limits` are enforced on what the header declares (file size,
  tensor count, dimensions, elements) before any tensor is materialized.
- Tensors are read as numpy arrays (the spectra need no torch, whose import costs about 2 s of
  CPU); bf16 and fp8, which numpy cannot hold, are widened exactly to float32 from their bytes at
  the offsets of the header safetensors has validated. :meth:`SafeWeights.read` gives a torch
  tensor in the stored dtype for the callers that load models.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from audit.errors import AdapterFormatError, LimitExceededError, UnsafeFormatError
from audit.limits import Limits

if TYPE_CHECKING:
    import torch

WeightsFormat = Literal["safetensors", "pickle", "lfs_pointer", "unknown"]

SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "pytorch_model.bin")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_NOT_NUMPY_DTYPES = {"BF16", "F8_E4M3", "F8_E5M2"}  # numpy has no such dtype


@dataclass(frozen=True)
class WeightsLocation:
    """Which file holds an adapter's weights and what it looks like from its first bytes."""

    path: Path
    format: WeightsFormat
    size: int


def sniff(path: Path) -> WeightsFormat:
    """Format of a weights file from its first bytes (never loads it).

    ``lfs_pointer`` for a git-LFS pointer, ``pickle`` for torch zip archives and raw pickles,
    ``safetensors`` when the 8-byte header length is plausible, ``unknown`` otherwise.
    """
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(LFS_MAGIC):
        return "lfs_pointer"
    if len(head) >= 9 and int.from_bytes(head[:8], "little") < os.path.getsize(path) and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def locate_weights(folder: Path) -> WeightsLocation | None:
    """Find the weights file of an adapter folder: ``adapter_model.safetensors`` first, then the
    pickle names peft used to write, then a lone ``*.safetensors``; ``None`` when there is none."""
    candidates = [folder / SAFETENSORS_NAME] + [folder / n for n in PICKLE_NAMES]
    lone = sorted(folder.glob("*.safetensors"))
    if len(lone) == 1:
        candidates.append(lone[0])
    for path in candidates:
        if path.is_file():
            return WeightsLocation(path=path, format=sniff(path), size=path.stat().st_size)
    return None


def refuse_unreadable(loc: WeightsLocation) -> None:
    """Raise the error that fits a weights file that is not safetensors.

    Raises:
        UnsafeFormatError: a pickle (code ``pickle_weights_refused``).
        AdapterFormatError: a git-LFS pointer (``lfs_pointer``) or bytes that are none of the
            known formats (``weights_invalid``).
    """
    file = loc.path.name
    if loc.format == "pickle" or (loc.format == "unknown" and loc.path.suffix in (".bin", ".pt", ".pth")
                                  and loc.size >= 64):
        raise UnsafeFormatError(
            f"weights are a torch pickle ({loc.size} bytes); pickles can execute code and are never "
            "loaded: ask the author for adapter_model.safetensors", file=file)
    if loc.format == "lfs_pointer":
        raise AdapterFormatError(
            f"the file is a git-LFS pointer ({loc.size} bytes), not the weights: the upload did not "
            "include the LFS object", code="lfs_pointer", file=file)
    if loc.format == "unknown" and loc.path.suffix == ".safetensors" and loc.size >= 8:
        with open(loc.path, "rb") as fh:
            declared = int.from_bytes(fh.read(8), "little")
        raise AdapterFormatError(
            f"the safetensors header declares {declared} bytes of header in a file of {loc.size} bytes",
            code="safetensors_invalid", file=file)
    if loc.format != "safetensors":
        raise AdapterFormatError(
            f"{loc.size} bytes that are neither safetensors, a pickle nor an LFS pointer",
            code="weights_invalid", file=file)


@dataclass(frozen=True)
class TensorInfo:
    """What the safetensors header declares for one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class SafeWeights:
    """A safetensors file opened under caps; tensors are read one at a time on request.

    The file is opened with safetensors' numpy framework (a tensor costs a few µs to read, a
    quarter of what its torch framework takes). :meth:`read_array` widens bf16 and fp8 tensors,
    which numpy cannot hold, to float32 exactly; :meth:`read` returns torch tensors in the stored
    dtype (through a second, torch-framework handle for bf16/fp8, opened on first need). Use as
    a context manager. ``tensors`` lists the header (name, shape, dtype) in file order.

    Raises (from the constructor):
        LimitExceededError: the file, a dimension, a tensor or the total exceeds ``limits``.
        AdapterFormatError: safetensors rejects the header (code ``safetensors_invalid``).
    """

    def __init__(self, path: Path, limits: Limits) -> None:
        from safetensors import SafetensorError, safe_open

        self.path = path
        file = path.name
        size = path.stat().st_size
        if size > limits.max_weights_bytes:
            raise LimitExceededError(f"weights are {size} bytes, cap is {limits.max_weights_bytes}", file=file)
        with open(path, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
        if header > limits.max_header_bytes:
            raise LimitExceededError(f"the safetensors header declares {header} bytes, cap is "
                                     f"{limits.max_header_bytes}", file=file)
        try:
            self._handle = safe_open(str(path), framework="numpy")
            self._file = self._handle.__enter__()
            self._torch_handle: object | None = None
            self._offsets: dict[str, tuple[int, int]] | None = None
            names = list(self._file.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise AdapterFormatError(f"safetensors rejects the file: {exc}", code="safetensors_invalid",
                                     file=file) from None
        if len(names) > limits.max_tensors:
            self.close()
            raise LimitExceededError(f"{len(names)} tensors, cap is {limits.max_tensors}", file=file)
        infos: list[TensorInfo] = []
        total = 0
        for name in dict.fromkeys(names):
            sl = self._file.get_slice(name)
            info = TensorInfo(name=name, shape=tuple(int(d) for d in sl.get_shape()), dtype=str(sl.get_dtype()))
            if any(d > limits.max_dim for d in info.shape):
                self.close()
                raise LimitExceededError(f"tensor {name} has shape {list(info.shape)}, dimension cap is "
                                         f"{limits.max_dim}", file=file)
            if info.numel > limits.max_tensor_elements:
                self.close()
                raise LimitExceededError(f"tensor {name} has {info.numel} elements, cap is "
                                         f"{limits.max_tensor_elements}", file=file)
            total += info.numel
            infos.append(info)
        if total > limits.max_total_elements:
            self.close()
            raise LimitExceededError(f"{total} elements in all, cap is {limits.max_total_elements}", file=file)
        self.tensors: dict[str, TensorInfo] = {i.name: i for i in infos}
        self.size = size

    def is_float(self, name: str) -> bool:
        return self.tensors[name].dtype in _FLOAT_DTYPES

    def read_array(self, name: str) -> np.ndarray:
        """Materialize one tensor as a numpy array of its declared shape: its declared dtype, except
        bf16 and fp8 (``F8_E4M3``: OCP E4M3FN; ``F8_E5M2``), which become float32 with the same values.

        Raises:
            KeyError: ``name`` is not a tensor of the file.
            OSError: the file cannot be read (a transient failure: the orchestrator retries).
        """
        info = self.tensors[name]
        if info.dtype not in _NOT_NUMPY_DTYPES:
            return self._file.get_tensor(name)
        if self._offsets is None:
            self._offsets = _data_offsets(self.path)
        start, end = self._offsets[name]
        if info.dtype == "BF16":  # the 16 bits of a bf16 are the high half of a float32
            raw = np.fromfile(self.path, dtype="<u2", count=(end - start) // 2, offset=start)
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info.shape)
        raw = np.fromfile(self.path, dtype=np.uint8, count=end - start, offset=start)
        return _fp8_table(info.dtype)[raw].reshape(info.shape)

    def read(self, name: str) -> torch.Tensor:
        """Materialize one tensor as a CPU torch tensor of its declared shape and dtype.

        Raises:
            KeyError: ``name`` is not a tensor of the file.
        """
        import torch

        if self.tensors[name].dtype in _NOT_NUMPY_DTYPES:
            if self._torch_handle is None:
                from safetensors import safe_open

                self._torch_handle = safe_open(str(self.path), framework="pt", device="cpu")
                self._torch_file = self._torch_handle.__enter__()  # type: ignore[attr-defined]
            return self._torch_file.get_tensor(name)
        return torch.from_numpy(self._file.get_tensor(name))

    def close(self) -> None:
        for attr in ("_handle", "_torch_handle"):
            handle = getattr(self, attr, None)
            setattr(self, attr, None)
            if handle is not None:
                handle.__exit__(None, None, None)

    def __enter__(self) -> SafeWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Absolute byte range of every tensor of a safetensors file whose header safetensors has
    already accepted (offsets inside the file, sizes matching dtype and shape; the header itself
    is at most safetensors' 100 MB cap). Layout: 8-byte little-endian header length ``n``, ``n``
    bytes of JSON header, the data (safetensors format spec)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return {k: (8 + n + int(v["data_offsets"][0]), 8 + n + int(v["data_offsets"][1]))
            for k, v in header.items() if k != "__metadata__"}


@cache
def _fp8_table(dtype: str) -> np.ndarray:
    """float32 value of each of the 256 bit patterns of an fp8 format (OCP 8-bit floating point
    specification, 2023): ``F8_E4M3`` is E4M3FN (bias 7, no infinities, NaN at ``S.1111.111``),
    ``F8_E5M2`` is IEEE-like (bias 15, infinities and NaNs at exponent 31)."""
    exp_bits, bias = (4, 7) if dtype == "F8_E4M3" else (5, 15)
    man_bits = 7 - exp_bits
    bits = np.arange(256)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exp = (bits >> man_bits) & ((1 << exp_bits) - 1)
    man = bits & ((1 << man_bits) - 1)
    value = np.where(exp == 0, man / 2**man_bits * 2.0 ** (1 - bias),
                     (1 + man / 2**man_bits) * 2.0 ** (exp - bias))
    top = (1 << exp_bits) - 1
    if dtype == "F8_E4M3":
        value = np.where((exp == top) & (man == (1 << man_bits) - 1), np.nan, value)
    else:
        value = np.where(exp == top, np.where(man == 0, np.inf, np.nan), value)
    return (sign * value).astype(np.float32)
