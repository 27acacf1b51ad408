#!/usr/bin/env python
"""The whole DisCo DETR story on the demo data, on a CPU (``make demo``).

1. render the demo data and install the demo backbone weights (skipped when present);
2. EdgeBoxes proposals for the unlabelled split (resumable, skipped when complete);
3. pre-train the demo detector with DisCo DETR and with Siamese DETR (same budget);
4. fine-tune three times under the same budget: from the ImageNet backbone only
   ("scratch": no DETR pre-training), from Siamese DETR and from DisCo DETR;
5. print a table of fine-tuning AP / AP50 / AP75 on the val split.

Every step is a detectron2 ``tools/lazyconfig_train_net.py`` run with its own output folder
under ``--out``; a step whose ``model_final.pth`` exists is not run again (use --force).
Whatever the table shows is reported as is: the seed and budgets are printed with it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = "datasets/weights/mobilenet_v2_imagenet.pth"


def run(cmd):
    print(f"\n>>> {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True)
    return time.time() - start


def final_metrics(output_dir):
    """The last bbox AP / AP50 / AP75 that detectron2's EvalHook wrote to metrics.json."""
    found = None
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            record = json.loads(line)
            if "bbox/AP" in record:
                found = {k: record[f"bbox/{k}"] for k in ("AP", "AP50", "AP75")}
    if found is None:
        raise RuntimeError(f"No evaluation results in {output_dir}/metrics.json")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="datasets/demo")
    parser.add_argument("--out", default="output/demo")
    parser.add_argument("--pretrain-iters", type=int, default=150)
    parser.add_argument("--finetune-iters", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rerun steps whose results exist")
    args = parser.parse_args(argv)
    timings = {}
    timings["data"] = run(["tools/make_demo_data.py", "--out", args.data])
    timings["weights"] = run(["tools/prepare_demo_backbone.py", "--out", WEIGHTS])
    timings["proposals"] = run(["tools/generate_proposals.py", "--images", f"{args.data}/images/unlabelled",
                                "--out", f"{args.data}/proposals/unlabelled.sqlite", "--workers", "2"])
    common = [f"train.seed={args.seed}"]

    def train(name, config, *overrides):
        out = os.path.join(args.out, name)
        if args.force or not os.path.exists(os.path.join(out, "model_final.pth")):
            timings[name] = run(["tools/lazyconfig_train_net.py", "--config-file", config, *common,
                                 f"train.output_dir={out}", *overrides])
        return out

    pre = {
        "disco": train("pretrain_disco", "configs/demo/disco_cond.py", f"train.max_iter={args.pretrain_iters}"),
        "siamese": train("pretrain_siamese", "configs/demo/siamese_cond.py", f"train.max_iter={args.pretrain_iters}"),
    }
    results = {}
    for name, init in (("scratch", WEIGHTS), ("siamese", f"{pre['siamese']}/model_final.pth"),
                       ("disco", f"{pre['disco']}/model_final.pth")):
        out = train(f"finetune_{name}", "configs/demo/cond.py", f"train.max_iter={args.finetune_iters}",
                    f"train.init_checkpoint={init}")
        results[name] = final_metrics(out)

    print(f"\nDemo results (seed {args.seed}; pre-training {args.pretrain_iters} iterations of 8 images, "
          f"fine-tuning {args.finetune_iters} iterations of 8 images; COCO-style AP on the 100 val images)")
    print(f"| {'pre-training':<15} | {'AP':>6} | {'AP50':>6} | {'AP75':>6} |")
    print(f"|{'-' * 17}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    labels = {"scratch": "none (ImageNet)", "siamese": "Siamese DETR", "disco": "DisCo DETR"}
    for name, m in results.items():
        print(f"| {labels[name]:<15} | {m['AP']:6.2f} | {m['AP50']:6.2f} | {m['AP75']:6.2f} |")
    print("step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    with open(os.path.join(args.out, "demo_results.json"), "w") as f:
        json.dump({"seed": args.seed, "pretrain_iters": args.pretrain_iters, "finetune_iters": args.finetune_iters,
                   "results": results, "timings_s": timings}, f, indent=1)


if __name__ == "__main__":
    main()
