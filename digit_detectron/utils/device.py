"""``MODEL.DEVICE`` and ``--device`` values: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda"."""

import logging

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available():
    import torch

    return torch.cuda.is_available()


def resolve_device(device):
    """
    The torch device to run on for a MODEL.DEVICE value: "auto" picks "cuda" when a GPU is usable, else
    "cpu"; "cuda" (or "cuda:N") where no GPU is usable falls back to "cpu" with a warning (a bundle trained
    on a GPU still reads on a laptop). Any other value is a ValueError naming MODEL.DEVICE.
    """
    value = str(device).strip().lower()
    if value == "auto":
        return "cuda" if cuda_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if cuda_available():
            return value
        logger.warning(f"MODEL.DEVICE {device}: no CUDA device is usable here; running on the CPU")
        return "cpu"
    raise ValueError(f"MODEL.DEVICE: {device!r} is not a device; use auto, cpu, cuda or cuda:N")
