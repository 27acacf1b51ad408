#!/usr/bin/env python
"""Train or evaluate a DisCo DETR LazyConfig, the detectron2 way.

    python tools/lazyconfig_train_net.py --config-file configs/demo/cond.py [key=value ...]
    python tools/lazyconfig_train_net.py --config-file configs/finetune_cond_voc.py \\
        --num-gpus 8 train.init_checkpoint=output/disco_cond/model_final.pth
    python tools/lazyconfig_train_net.py --config-file ... --eval-only train.init_checkpoint=model.pth
    python tools/lazyconfig_train_net.py --config-file ... --resume   # continue a killed run
    python tools/lazyconfig_train_net.py --config-file configs/finetune_cond_coco.py --eval-only \\
        train.init_checkpoint=zoo://detrex/conditional_detr_r50_50ep   # model zoo: docs/model_zoo.md

detectron2's standard arguments (--num-gpus, --num-machines, --machine-rank, --dist-url)
go to detectron2's ``launch``. Without GPUs, --num-gpus N starts N CPU processes that
train together over the GLOO backend.
"""
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config
from disco_detr.engine import Trainer


def summarize(results) -> None:
    """One line per evaluated task: AP / AP50 / AP75 (COCO-style, in percent)."""
    if not comm.is_main_process() or not results:
        return
    for task, metrics in results.items():
        if isinstance(metrics, dict) and "AP" in metrics:
            print(f"[{task}] AP {metrics['AP']:.2f}  AP50 {metrics.get('AP50', float('nan')):.2f}  "
                  f"AP75 {metrics.get('AP75', float('nan')):.2f}", flush=True)


def main(args):
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DisCoCheckpointer(model, cfg.train.output_dir, allow_pickle=cfg.train.checkpoint_allow_pickle,
                          transfer_mismatch=cfg.train.transfer_mismatch).load(cfg.train.init_checkpoint)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    summarize(results)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
