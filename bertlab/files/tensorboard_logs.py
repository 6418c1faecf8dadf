"""A run's TensorBoard event files, read one way: every scalar, every event, or a clear error.

Decisions:
- One reader for the three uses (plots, the soak's step times, the model card's final figures),
  all through tensorboard's EventAccumulator with no sampling (`size_guidance` 0): a figure
  drawn or reported from a log must show every logged value, not a reservoir sample.
- A truncated or foreign file is the user's input: a ValueError naming the folder. A caller for
  which a missing log is only a missing fact (an export's model card) catches it.
- Every record's checksums are verified first: EventAccumulator stops at the first record whose
  checksum fails and says nothing, so a flipped byte mid-file would silently cut every curve
  there. A last record cut short is not damage: it is a live run's record still being written.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

EVENT_FILES = "events.out.tfevents.*"


def check_event_records(path: Path) -> None:
    """ValueError naming `path` unless every complete record's length and data checksums hold
    (TFRecord framing: length u64, masked CRC-32C of it, data, masked CRC-32C of the data)."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = path.read_bytes()
    position, number = 0, 1
    while position + 12 <= len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[position + 8 : position + 12])
        end = position + 12 + length + 4
        if masked_crc32c(header) == header_crc and end > len(data):
            return  # the last record, still being written
        body = data[position + 12 : end - 4]
        if (
            masked_crc32c(header) != header_crc
            or masked_crc32c(body) != struct.unpack("<I", data[end - 4 : end])[0]
        ):
            raise ValueError(
                f"{path} is damaged: record {number} (byte {position}) fails its checksum, so "
                "the figures logged after it cannot be read"
            )
        position, number = end, number + 1


def read_scalars(folder: Path) -> dict[str, list[Any]]:
    """Every scalar tag of the event files in `folder` (one run's), as tensorboard's ScalarEvents
    (`.step`, `.wall_time`, `.value`), in the order they were logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in sorted(Path(folder).glob(EVENT_FILES)):
        check_event_records(path)
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    try:
        accumulator.Reload()
        return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}
    except Exception as error:  # tensorboard raises many kinds for a damaged file
        raise ValueError(f"{folder}: unreadable TensorBoard event file ({error})") from None
