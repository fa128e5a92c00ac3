"""What the PiT and ViT backbones share: pretrained loading and stage freezing."""

from typing import Callable, List, Tuple

from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..checkpoint import StateDict, load_pretrained


def init_linear_trunc_normal(module: nn.Module) -> None:
    """ViT / DeiT initialisation of every Linear below ``module``: N(0, 0.02) truncated, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class TransformerBackbone(BaseModule):
    """Base of :class:`PiT` and :class:`ViT`.

    Subclasses set :attr:`checkpoint_filter` (their pure ``state_dict -> state_dict``
    converter) and implement :meth:`frozen_parts`.
    """

    checkpoint_filter: Callable[[StateDict], StateDict]
    # Parameter-name prefixes of layers added for detection, which ImageNet files lack: they keep
    # their own initialisation when a pretrained file does not have them.
    detection_layers: Tuple[str, ...] = ()

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` with pit-det's strict,
        code-free loader; other ``init_cfg`` types go to mmengine."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained(self, self.init_cfg['checkpoint'], type(self).checkpoint_filter, self.detection_layers)
            self._is_init = True
        else:
            super().init_weights()

    def frozen_parts(self) -> List[nn.Module]:
        """Modules and parameters that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for part in self.frozen_parts():
            part.requires_grad_(False)
            if isinstance(part, nn.Module):
                part.eval()

    def train(self, mode: bool = True) -> 'TransformerBackbone':
        """Switch mode, keeping frozen parts in eval mode (dropout off, no gradient)."""
        super().train(mode)
        self._freeze_stages()
        return self
