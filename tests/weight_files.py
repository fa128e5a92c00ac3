"""Weight files in the layouts pit-det promises to read, written from random-weight models (no
download is possible on test machines): official naver-ai PiT, timm (>= 0.9 and older), safetensors,
official DeiT, timm ViT, torchvision ResNet-50."""

import re
from pathlib import Path

import torch


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every parameter moved off its initial value, so that a loader
    that silently keeps the initialisation cannot pass a comparison."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def to_official_pit(state: dict) -> dict:
    """timm >= 0.9 PiT keys -> naver-ai/pit keys (``pools.N`` is the pooling after stage N)."""
    return {
        re.sub(r'^transformers\.(\d+)\.pool\.', lambda m: f'pools.{int(m.group(1)) - 1}.', k): v
        for k, v in state.items()
    }


def to_old_timm_pit(state: dict) -> dict:
    """timm >= 0.9 PiT keys -> timm < 0.9 keys (pooling stored at the end of the previous stage)."""
    return {
        re.sub(r'^transformers\.(\d+)\.pool\.', lambda m: f'transformers.{int(m.group(1)) - 1}.pool.', k): v
        for k, v in state.items()
    }


def write(state: dict, layout: str, folder: Path) -> Path:
    """Write a timm-layout ``state`` (PiT or ViT) as ``layout`` into ``folder``; returns the path.

    Layouts: ``'pit_official'`` (naver-ai/pit ``pit_s_809.pth``), ``'pit_official_wrapped'``
    (``{'model': ...}``), ``'deit_official'`` (facebookresearch/deit, ``{'model': ...}``), ``'timm'``,
    ``'timm_old_pit'``, ``'safetensors'`` (timm hub), ``'torchvision'`` (a plain state dict).
    """
    path = folder / f'{layout}.pth'
    if layout == 'pit_official':
        torch.save(to_official_pit(state), path)
    elif layout == 'pit_official_wrapped':
        torch.save({'model': to_official_pit(state), 'epoch': 300}, path)
    elif layout == 'deit_official':
        torch.save({'model': state, 'optimizer': {}, 'epoch': 299}, path)
    elif layout in ('timm', 'torchvision'):
        torch.save(state, path)
    elif layout == 'timm_old_pit':
        torch.save(to_old_timm_pit(state), path)
    elif layout == 'safetensors':
        from safetensors.torch import save_file

        path = folder / 'model.safetensors'
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        raise ValueError(layout)
    return path


def toy_checkpoint(
    folder: Path, config: str = 'configs/toy/deformable_detr_pit_s_toy.py', name: str = 'toy.pth'
) -> Path:
    """``folder/name``: ``config``'s detector with random weights, saved as mmengine saves a
    checkpoint (``state_dict``)."""
    from pit_det.models import build_detector

    path = folder / name
    torch.save({'state_dict': build_detector(config).state_dict()}, path)
    return path
