"""Where each crop of an image sits (§4.1), as a window (top, left, flipped).

Training takes a random crop_size window of the image_size image and mirrors it with
probability 1/2; testing takes the centre window, or the ten of §4.1 (four corners and centre,
then their mirrors, in torchvision's five_crop order). A window is drawn once, from torch's
global generator (which the loader seeds per item from (seed, epoch, index)), and then cut from
whatever holds the pixels: one image in a loader worker (`cut_window`), a batch of decoded
images on the device, or the mean image (`cut_windows`), so that each crop and its window of
the mean image are the same pixels (batches.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from alexnet.data.sources.downsample import centre_offset


def draw_window(
    image_size: int, crop_size: int, flip: bool, generator: torch.Generator | None = None
) -> tuple[int, int, bool]:
    """A random (top, left, flipped) window: every position equally likely, mirrored with
    probability 1/2 when `flip`. Draws nothing for a coordinate with one possible value.
    generator: torch's global one when None. Top and left come from one call, the same values
    as two in turn: a loader thread holds the GIL for each call."""
    room = image_size - crop_size
    top, left = torch.randint(0, room + 1, (2,), generator=generator).tolist() if room else (0, 0)
    flipped = flip and torch.rand((), generator=generator).item() < 0.5
    return top, left, flipped


CENTRE_VIEW = 4  # the centre window's place among `eval_windows`' ten


def eval_windows(image_size: int, crop_size: int, ten_crop: bool) -> torch.Tensor:
    """(1, 3), the centre window; or (10, 3): top-left, top-right, bottom-left, bottom-right,
    centre, then the same five mirrored (§4.1, in torchvision's five_crop order)."""
    centre, far = centre_offset(image_size, crop_size), image_size - crop_size
    if not ten_crop:
        return torch.tensor([[centre, centre, 0]])
    corners = [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]
    return torch.tensor([[top, left, flipped] for flipped in (0, 1) for top, left in corners])


class TenCropViews(NamedTuple):
    """Which of the ten windows of §4.1 differ: `kept`, the first of each distinct window;
    `counts`, how many of the ten each kept one stands for; `slots`, for each of the ten, its
    place among the kept ones. When the image is the crop's size the five positions coincide
    (digits at 64 px: 2 views, the centre and its mirror), and the net need only see those."""

    kept: list[int]
    counts: list[int]
    slots: list[int]


def ten_crop_views(image_size: int, crop_size: int) -> TenCropViews:
    """The distinct views among the ten windows of an image_size image (`eval_windows`)."""
    windows = eval_windows(image_size, crop_size, ten_crop=True).tolist()
    kept: list[int] = []
    counts: list[int] = []
    slots: list[int] = []
    for view, window in enumerate(windows):
        slot = next((s for s, earlier in enumerate(kept) if windows[earlier] == window), None)
        if slot is None:
            slot = len(kept)
            kept.append(view)
            counts.append(0)
        counts[slot] += 1
        slots.append(slot)
    return TenCropViews(kept, counts, slots)


def distinct_ten_crops(image_size: int, crop_size: int) -> int:
    """How many of the ten windows differ: 10, or as few as 2 (`ten_crop_views`)."""
    return len(ten_crop_views(image_size, crop_size).kept)


def cut_window(
    pixels: torch.Tensor, window: torch.Tensor, crop_size: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(C, S, S) -> (C, crop, crop): the window's (top, left, flipped) pixels, mirrored if it
    says so.

    out: a tensor the crop is copied into and returned (torch releases the GIL, so loader
    threads copy in parallel); without it, a view or a mirrored copy. The mirror is made in
    (c, c, 3) order, a decoder's, so a copy into a channels-last `out` transposes nothing
    (docs/measurements.md, "CPU memory order")."""
    top, left, flipped = window.tolist()  # one call: a generator of int()s holds the GIL longer
    crop = pixels[..., top : top + crop_size, left : left + crop_size].movedim(-3, -1)
    if flipped:
        crop = crop.flip(-2)
    return crop.movedim(-1, -3) if out is None else out.copy_(crop.movedim(-1, -3))


def cut_windows(
    images: torch.Tensor, windows: torch.Tensor, crop_size: int, which: torch.Tensor | None = None
) -> torch.Tensor:
    """Windows (*W, 3) cut from images (N, C, S, S) in one gather: (*W, C, crop, crop).

    which (*W): the image each window is cut from (default: window row b from image b).
    """
    windows = windows.to(images.device)
    if which is None:
        which = torch.arange(windows.shape[0], device=images.device)
        which = which.view(-1, *[1] * (windows.dim() - 2)).expand(windows.shape[:-1])
    steps = torch.arange(crop_size, device=images.device)  # (crop,)
    top, left, flipped = windows.unbind(-1)  # (*W) each
    rows = top[..., None] + steps  # (*W, crop)
    columns = torch.where(
        flipped[..., None].bool(), left[..., None] + crop_size - 1 - steps, left[..., None] + steps
    )  # (*W, crop)
    # Advanced indices on either side of the channel slice: the result is (*W, crop, crop, C).
    cut = images[which[..., None, None], :, rows[..., :, None], columns[..., None, :]]
    return cut.movedim(-1, -3)
