"""Backbone smoke job: build PiT-S and ViT-S from mmdet's registry, load a weight file
through ``init_cfg`` and print the multi-scale features of a half-resolution image.

No pretrained weights can be downloaded here, so the weight file is written first from
a randomly initialised timm model in the official naver-ai / DeiT layouts; with real
weights pass ``--pit-checkpoint pit_s_809.pth`` / ``--vit-checkpoint deit_small_...pth``.
"""

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from mmdet.registry import MODELS

import pit_det  # noqa: F401  registers the backbones
from pit_det.errors import run_tool


def _random_checkpoints(folder: Path) -> tuple:
    pit = timm.create_model('pit_s_224', pretrained=False).state_dict()
    official = {
        re.sub(r'^transformers\.(\d+)\.pool\.', lambda m: f'pools.{int(m.group(1)) - 1}.', k): v for k, v in pit.items()
    }
    pit_path, vit_path = folder / 'pit_s_random.pth', folder / 'deit_s_random.pth'
    torch.save(official, pit_path)
    torch.save({'model': timm.create_model('deit_small_patch16_224', pretrained=False).state_dict()}, vit_path)
    return pit_path, vit_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pit-checkpoint', help='PiT-S weights (official or timm layout)')
    parser.add_argument('--vit-checkpoint', help='DeiT-S weights (official or timm layout)')
    parser.add_argument('--size', type=int, nargs=2, default=(400, 667), metavar=('H', 'W'))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pit_path, vit_path = args.pit_checkpoint, args.vit_checkpoint
        if not (pit_path and vit_path):
            print('no checkpoints given: writing randomly initialised ones in the official layouts')
            rand_pit, rand_vit = _random_checkpoints(Path(tmp))
            pit_path, vit_path = pit_path or rand_pit, vit_path or rand_vit
        x = torch.randn(1, 3, *args.size)
        for name, cfg in [
            ('PiT-S', dict(type='PiT', arch='s', init_cfg=dict(type='Pretrained', checkpoint=str(pit_path)))),
            ('ViT-S', dict(type='ViT', arch='s', init_cfg=dict(type='Pretrained', checkpoint=str(vit_path)))),
        ]:
            model = MODELS.build(cfg)
            model.init_weights()
            model.eval()
            with torch.no_grad():
                model(x)  # warm-up
                t0 = time.perf_counter()
                outs = model(x)
                ms = (time.perf_counter() - t0) * 1e3
            params = sum(p.numel() for p in model.parameters()) / 1e6
            print(
                f'{name}: {params:.1f} M parameters, {ms:.0f} ms for one {args.size[0]}x{args.size[1]} image '
                f'on {torch.get_num_threads()} CPU threads'
            )
            for out, stride in zip(outs, model.out_strides):
                print(f'  stride {stride:>2}: {tuple(out.shape)}')


if __name__ == '__main__':
    sys.exit(run_tool(main))
