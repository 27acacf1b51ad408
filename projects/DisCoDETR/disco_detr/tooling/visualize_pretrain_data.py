"""Draw what the paired-view pre-training mapper produces, one PNG per image.

Top: the (resized, possibly flipped) source with view 1 (red), view 2 (blue) and their
intersection (green). Middle: the two views with their n numbered boxes (same number =
same physical box). Bottom: the 2 x n crops, after colour augmentation.

    python tools/visualize_pretrain_data.py --dataset disco_demo_unlabelled --num 4 --out output/vis_pretrain
    python tools/visualize_pretrain_data.py --config-file output/my_pretrain/pretrain_config.yaml --out output/views

``--dataset``: a registered unlabelled dataset, with the mapper's default sizes. ``--config-file``: a DisCo /
Siamese DETR pre-training config (a .py or a run's saved .yaml, such as tools/pretrain_on_folder.py writes),
whose dataset and mapper settings are drawn (colour augmentation and crops done here, on the CPU).
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

import disco_detr  # noqa: E402,F401  (registers the datasets)
from disco_detr.config import load_config  # noqa: E402
from disco_detr.data.image_io import read_rgb_image  # noqa: E402
from disco_detr.data.pretrain_mapper import PairedViewMapper  # noqa: E402
from disco_detr.utils.progress import progress_bar  # noqa: E402

COLOURS = ("tab:red", "tab:blue")


def _rect(ax, box, colour, label=None, width=1.5):
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width))
    if label is not None:
        ax.text(x0 + 1, y0 + 1, label, color="white", fontsize=7, va="top",
                bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, edgecolor="none"))


def draw(sample: dict, path: str) -> None:
    n = sample["boxes"].shape[1]
    fig = plt.figure(figsize=(max(10, n * 1.1), 12))
    grid = fig.add_gridspec(4, max(n, 2))
    source = np.array(read_rgb_image(sample["file_name"]))  # a writable copy: torch.from_numpy warns otherwise
    hs, ws = sample["source_size"]
    source = torch.nn.functional.interpolate(torch.from_numpy(source).permute(2, 0, 1)[None].float(), size=(hs, ws),
                                             mode="bilinear", align_corners=False)[0]
    if sample["flipped"]:
        source = source.flip(-1)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(source.permute(1, 2, 0).clamp(0, 255).byte().numpy())
    regions = sample["view_regions"]
    for v in range(2):
        _rect(ax, regions[v], COLOURS[v], f"view {v + 1}", width=2)
    inter = torch.cat([regions[:, :2].max(0).values, regions[:, 2:].min(0).values])
    _rect(ax, inter, "tab:green", "intersection", width=2)
    ax.set_title(f"{os.path.basename(sample['file_name'])}: source {hs}x{ws}, flipped={sample['flipped']}, "
                 f"{sample['num_proposals']} of {n} boxes from proposals")
    ax.axis("off")
    half = max(n, 2) // 2
    for v in range(2):
        ax = fig.add_subplot(grid[1, v * half:(v + 1) * half])
        ax.imshow(sample["views"][v].permute(1, 2, 0).numpy())
        for i, box in enumerate(sample["boxes"][v]):
            _rect(ax, box, COLOURS[v], str(i))
        ax.set_title(f"view {v + 1}")
        ax.axis("off")
        for i in range(n):
            ax = fig.add_subplot(grid[2 + v, i])
            ax.imshow(sample["crops"][v, i].permute(1, 2, 0).numpy())
            ax.set_title(f"v{v + 1} box {i}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="disco_demo_unlabelled", help="a registered unlabelled dataset")
    parser.add_argument("--config-file", default=None,
                        help="a DisCo / Siamese DETR pre-training config: its dataset and mapper (instead of --dataset)")
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="output/vis_pretrain")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.config_file:
        train = load_config(args.config_file).dataloader.train
        if not str(train.mapper.get("_target_", "")).endswith("PairedViewMapper"):
            parser.error(f"{args.config_file} is not a DisCo / Siamese DETR pre-training config (its mapper is "
                         f"{train.mapper.get('_target_')}, not PairedViewMapper)")
        records = instantiate(train.dataset)
        train.mapper.update(photometric="cpu", crops_on_device=False)  # colour and crops here, as the workers would
        mapper = instantiate(train.mapper)
    else:
        records = DatasetCatalog.get(args.dataset)
        mapper = PairedViewMapper(photometric="cpu")  # colour-augmented here (training does it on the device)
    written = []
    with progress_bar(range(min(args.num, len(records))), desc="visualize") as bar:
        for k in bar:
            np.random.seed(args.seed + k)
            torch.manual_seed(args.seed + k)
            sample = mapper(records[k])
            path = os.path.join(args.out, f"{k:03d}_{os.path.splitext(os.path.basename(sample['file_name']))[0]}.png")
            draw(sample, path)
            written.append(path)
    print(f"wrote {len(written)} images to {args.out}")
    return written
