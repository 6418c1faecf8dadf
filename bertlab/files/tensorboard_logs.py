"""A run's TensorBoard event files, read one way: every scalar, every event, or a clear error.

Decisions:
- One reader for the three uses (plots, the soak's step times, the model card's final figures),
  all through tensorboard's EventAccumulator with no sampling (`size_guidance` 0): a figure
  drawn or reported from a log must show every logged value, not a reservoir sample.
- A truncated or foreign file is the user's input: a ValueError naming the folder. A caller for
  which a missing log is only a missing fact (an export's model card) catches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_scalars(folder: Path) -> dict[str, list[Any]]:
    """Every scalar tag of the event files in `folder` (one run's), as tensorboard's ScalarEvents
    (`.step`, `.wall_time`, `.value`), in the order they were logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    try:
        accumulator.Reload()
        return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}
    except Exception as error:  # tensorboard raises many kinds for a damaged file
        raise ValueError(f"{folder}: unreadable TensorBoard event file ({error})") from None
