"""GPU memory of a render: an estimate up front, and a readable error instead of a CUDA trace.

Memory grows with the number of tile-Gaussian pairs M (binning and the backward's per-pair
gradient slots), the number of Gaussians N and the number of pixels. The estimate is checked
against the free device memory once M is known, before the big per-pair buffers are made;
an allocation that fails anyway is re-raised as RenderOutOfMemoryError with the same facts.
"""

from __future__ import annotations

import contextlib

import torch

# Bytes per pair: tile and Gaussian ids as emitted (4 + 4), the sorted tiles and the sort's
# int64 permutation (4 + 8), the sort's scratch (~12), the sorted ids (4), plus the backward's
# gradient slot of up to 12 values of the data dtype.
_PAIR_INDEX_BYTES = 36
_PAIR_SLOT_VALUES = 12
# Per Gaussian: projected values, rectangles, depth order and offsets, parameter gradients and
# the reduced slots (SH degree 3: about 80 values); per pixel: 4 features, T, last index and
# their gradients.
_GAUSSIAN_VALUES = 96
_PIXEL_VALUES = 16


class RenderOutOfMemoryError(torch.cuda.OutOfMemoryError):
    """The GPU has too little free memory for this render (a torch OutOfMemoryError)."""


def estimate_bytes(num_pairs: int, num_gaussians: int, width: int, height: int, dtype: torch.dtype) -> int:
    """Device memory a forward + backward render needs beyond the model's parameters."""
    item = torch.empty((), dtype=dtype).element_size()
    per_pair = _PAIR_INDEX_BYTES + _PAIR_SLOT_VALUES * item
    return num_pairs * per_pair + num_gaussians * _GAUSSIAN_VALUES * item + width * height * _PIXEL_VALUES * item


def available_bytes(device: torch.device) -> int | None:
    """Free device memory plus what torch's caching allocator holds unused; None off CUDA."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _describe(num_pairs: int, num_gaussians: int, width: int, height: int, dtype: torch.dtype,
              device: torch.device) -> str:  # fmt: skip
    need = estimate_bytes(num_pairs, num_gaussians, width, height, dtype)
    avail = available_bytes(device)
    have = f"{avail / 2**30:.2f} GiB is free" if avail is not None else "the free memory is unknown"
    return (
        f"rendering {num_gaussians:,} Gaussians at {width}x{height} needs about {need / 2**30:.2f} GiB of GPU memory "
        f"for its {num_pairs:,} tile-Gaussian pairs, but {have} on {device}; render fewer Gaussians or a smaller "
        "image, free GPU memory (other tensors, other processes), or use a GPU with more memory"
    )


def check(num_pairs: int, num_gaussians: int, width: int, height: int, dtype: torch.dtype,
          device: torch.device) -> None:  # fmt: skip
    """Raise RenderOutOfMemoryError when the estimate exceeds the device's free memory."""
    avail = available_bytes(device)
    if avail is not None and estimate_bytes(num_pairs, num_gaussians, width, height, dtype) > avail:
        raise RenderOutOfMemoryError(_describe(num_pairs, num_gaussians, width, height, dtype, device))


@contextlib.contextmanager
def friendly_oom(num_pairs: int, num_gaussians: int, width: int, height: int, dtype: torch.dtype,
                 device: torch.device):  # fmt: skip
    """Re-raise a CUDA out-of-memory error inside the block as RenderOutOfMemoryError."""
    try:
        yield
    except RenderOutOfMemoryError:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        first = ". ".join(str(exc).split(". ")[:2])  # "CUDA out of memory. Tried to allocate X GiB"
        message = _describe(num_pairs, num_gaussians, width, height, dtype, device) + f" ({first})"
        raise RenderOutOfMemoryError(message) from None
