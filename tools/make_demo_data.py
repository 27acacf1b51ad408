"""Generates the synthetic demo dataset (see ``disco_detr.tooling.demo_images``).

Example: ``python tools/make_demo_data.py --out datasets/demo``. Does nothing when the
output already holds a dataset made with the same parameters, unless ``--force``.
"""

import argparse
import sys
from pathlib import Path


def _demo_module():
    try:
        from disco_detr.tooling import demo_images as demo
    except ImportError:  # not installed: use the source tree
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "projects" / "DisCoDETR"))
        from disco_detr.tooling import demo_images as demo
    return demo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder, e.g. datasets/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--num-unlabelled", type=int, default=300)
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)

    demo = _demo_module()
    result = demo.generate_demo_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        num_unlabelled=args.num_unlabelled,
        image_size=args.size,
        seed=args.seed,
        force=args.force,
    )
    counts = (
        f"{args.num_train} train / {args.num_val} val / {args.num_unlabelled} unlabelled images "
        f"({args.size} px, seed {args.seed})"
    )
    if result["generated"]:
        print(f"demo dataset: wrote {counts} to {result['root']}")
    else:
        print(
            f"demo dataset: {result['root']} is up to date ({counts}); nothing to do "
            "(--force regenerates)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
