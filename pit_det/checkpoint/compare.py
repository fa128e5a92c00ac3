"""The one state-dict comparison: what keeps a checkpoint's weights from loading into a model."""

from typing import List, Mapping, NamedTuple

from torch import Tensor


class StateDictMismatch(NamedTuple):
    """What keeps a state dict from loading into a model: keys missing from it, keys the model
    does not have, and keys whose shapes differ (``'key: checkpoint (..) vs model (..)'``)."""

    missing: List[str]
    unexpected: List[str]
    shapes: List[str]

    def describe(self, limit: int = 5) -> str:
        parts = []
        for what, keys in (
            ('missing from the checkpoint', self.missing),
            ('not in the model', self.unexpected),
            ('with other shapes', self.shapes),
        ):
            if keys:
                parts.append(f'{len(keys)} weights {what}: {keys[:limit]}' + (' ...' if len(keys) > limit else ''))
        return '; '.join(parts)


def require_fit(own: Mapping[str, Tensor], state: Mapping[str, Tensor], checkpoint: str, config: str) -> None:
    """Every weight of the model in the checkpoint, with its shape, and nothing else.

    mmengine's ``load_from`` and mmdet's ``init_detector`` load what fits and log the rest, so a
    checkpoint of another detector would run with random weights; the tools that evaluate or draw
    a checkpoint call this first.

    Raises:
        CheckpointError: naming the checkpoint, the config and what differs.
    """
    from ..errors import CheckpointError

    mismatch = state_dict_mismatch(own, state)
    if any(mismatch):
        raise CheckpointError(f'{checkpoint} does not match {config}: {mismatch.describe()}')


def state_dict_mismatch(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> StateDictMismatch:
    """Compare a checkpoint's ``state`` with a model's ``own`` state dict, key by key."""
    return StateDictMismatch(
        missing=sorted(set(own) - set(state)),
        unexpected=sorted(set(state) - set(own)),
        shapes=[
            f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
            for k, v in own.items()
            if k in state and state[k].shape != v.shape
        ],
    )
