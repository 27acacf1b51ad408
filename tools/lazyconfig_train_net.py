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
import disco_detr  # noqa: F401  (first: it imports detectron2 without the torch.jit.script FutureWarning)

# isort: split
from detectron2.engine import launch

from disco_detr.config import load_config
from disco_detr.engine import Trainer
from disco_detr.engine.launch import argument_parser, evaluate_checkpoint, setup, summarize


def do_train(cfg, args):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(args):
    cfg = load_config(args.config_file, args.opts)
    setup(cfg, args)
    results = evaluate_checkpoint(cfg) if args.eval_only else do_train(cfg, args)
    summarize(results)
    return results


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
