"""Training hooks."""
import json
import os.path as osp

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class ValidateBeforeTrainHook(Hook):
    """Run the validation loop once before the first training iteration and write its
    metrics to ``<work_dir>/metrics_before_train.json``: the untrained baseline that
    shows how much training changed. Skipped when resuming (it would not be untrained)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        if runner.iter > 0 or runner.val_loop is None:
            return
        metrics = runner.val_loop.run()
        runner.logger.info(f'metrics before training: {metrics}')
        if runner.rank == 0:
            with open(osp.join(runner.work_dir, 'metrics_before_train.json'), 'w') as f:
                json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
