"""Throughput of the paired-view pre-training data path, old and new side by side.

At the paper's settings (short side 320-480, long side <= 600, n = 10, 128 x 128 crops) it
times, in one process with one thread (= one DataLoader worker):

* old: ``PairedViewMapper(photometric="cpu")``, the all-on-CPU path (decode,
  geometry and torchvision colour augmentation of 2 views + 20 crops per sample);
* new: ``PairedViewMapper()`` (decode with simplejpeg, geometry only, colour parameters drawn),
  plus the batched colour augmentation it leaves to the training device
  (the batch transform :class:`disco_detr.data.photometric.PairedViewPhotometric`) on a collated batch, per sample,
  on CPU and on CUDA when present;
* new_device_crops: ``PairedViewMapper(crops_on_device=True)`` (the paper config's setting): the
  crops are cut on the device too (included in the device-side figure above);
The two mappers alternate sample by sample (same records, same seeds), so that other load on
the machine affects both alike.

* decoding alone: the project's reader (``read_rgb_image``, "pil_read_rgb_image") vs PIL vs torchvision's
  ``decode_jpeg`` vs simplejpeg; simplejpeg's pixels are compared with PIL's.

Then the DataLoader workers one GPU needs to feed ``--batch-per-gpu`` images per step for a few
step times. Images: by default ``--num-images`` JPEGs of 500 x 375 (ImageNet-like) cut at random
from matplotlib's bundled ``grace_hopper.jpg`` (a real photograph) and re-encoded at quality 90,
with 512 random proposals each (the mapper's cost depends on the proposal count, not on the
boxes' content); ``--dataset NAME`` uses a registered unlabelled dataset instead. Ends with a
JSON line.

    python tools/benchmarks/benchmark_pretrain_mapper.py --num 60
"""
import argparse
import io
import json
import math
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from disco_detr.data.image_io import read_rgb_image
from disco_detr.data.photometric import PairedViewPhotometric
from disco_detr.data.pretrain_mapper import PairedViewMapper, collate_paired_views
from disco_detr.data.proposal_store import Proposals, ProposalStore


def make_photo_dataset(folder: str, num: int, seed: int = 0) -> list[dict]:
    """``num`` 500 x 375 JPEG crops of matplotlib's grace_hopper.jpg with 512 random proposals."""
    import matplotlib

    source_path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.exists(source_path):
        raise FileNotFoundError(f"{source_path} not found; pass --dataset NAME to use a registered dataset")
    source = Image.open(source_path).convert("RGB")
    rng = np.random.default_rng(seed)
    store = ProposalStore(os.path.join(folder, "proposals.sqlite"), mode="a")
    records = []
    for i in range(num):
        w = int(rng.integers(300, source.width + 1))
        h = min(int(w * 0.75), source.height)
        x, y = int(rng.integers(0, source.width - w + 1)), int(rng.integers(0, source.height - h + 1))
        image = source.crop((x, y, x + w, y + h)).resize((500, 375), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        name = f"{i:04d}.jpg"
        image.save(os.path.join(folder, name), quality=90)
        xy = rng.uniform(0, (450, 330), (512, 2))
        boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(10, 300, (512, 2)), (500, 375))], 1)
        store.put_many([(name, Proposals(boxes=boxes.astype(np.float32), scores=np.linspace(1, 0, 512, dtype=np.float32),
                                         height=375, width=500))])
        records.append({"file_name": os.path.join(folder, name), "image_id": i,
                        "proposals_file": store.path, "proposal_key": name})
    store.close()
    return records


def time_mappers(mappers: dict, records, num):
    """Wall and CPU seconds per sample of each mapper, alternating them sample by sample (the same
    records and seeds) so that load from other processes hits all alike; also the last mapper's
    samples. CPU time (this process, one thread) is the work itself, wall time includes waiting
    for a core on a busy machine."""
    for mapper in mappers.values():
        for record in records[:3]:  # warm-up (opens the store, allocates)
            mapper(record)
    wall, cpu = dict.fromkeys(mappers, 0.0), dict.fromkeys(mappers, 0.0)
    samples = []
    for k in tqdm(range(num), desc="mappers"):
        for name, mapper in mappers.items():
            np.random.seed(k)
            torch.manual_seed(k)
            start, start_cpu = time.perf_counter(), time.process_time()
            sample = mapper(records[k % len(records)])
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
        samples.append(sample)
    return {name: t / num for name, t in wall.items()}, {name: t / num for name, t in cpu.items()}, samples


def time_decoders(files, repeats=3):
    import simplejpeg
    from torchvision.io import ImageReadMode, decode_jpeg

    blobs = []
    for f in files:
        with open(f, "rb") as fh:
            blobs.append(fh.read())
    decoders = {
        "pil_read_rgb_image": lambda i: read_rgb_image(files[i]),
        "pil_bytes": lambda i: np.asarray(Image.open(io.BytesIO(blobs[i])).convert("RGB")),
        "torchvision_decode_jpeg": lambda i: decode_jpeg(torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8),
                                                         mode=ImageReadMode.RGB),
        "simplejpeg": lambda i: simplejpeg.decode_jpeg(blobs[i], colorspace="RGB"),
    }
    out = {}
    for name, fn in decoders.items():
        fn(0)
        start = time.perf_counter()
        for _ in range(repeats):
            for i in range(len(files)):
                fn(i)
        out[name] = round(1000 * (time.perf_counter() - start) / (repeats * len(files)), 3)
    same = all(np.array_equal(decoders["simplejpeg"](i), decoders["pil_bytes"](i)) for i in range(len(files)))
    return out, same


def time_device_augment(samples, batch_size, device, repeats=2):
    """Seconds per sample of the batch transform PairedViewPhotometric on a collated batch of the last
    mapper's samples moved to ``device`` (crops cut on the device, then colour augmentation of views and crops)."""
    batch = collate_paired_views([samples[k % len(samples)] for k in range(batch_size)])
    transform = PairedViewPhotometric()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    transform(batch.to(device))  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        transform(batch.to(device))
    sync()
    return (time.perf_counter() - start) / (repeats * batch_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="", help="a registered unlabelled dataset (default: photo JPEGs)")
    parser.add_argument("--num-images", type=int, default=40, help="photo JPEGs to make (without --dataset)")
    parser.add_argument("--num", type=int, default=60, help="samples timed per path")
    parser.add_argument("--batch-per-gpu", type=int, default=32)
    parser.add_argument("--step-times", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="GPU seconds per training step to size the worker count for")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker = one process with one thread
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset:
            from detectron2.data import DatasetCatalog

            import disco_detr  # noqa: F401  (registers the datasets)

            records = DatasetCatalog.get(args.dataset)
        else:
            records = make_photo_dataset(tmp, args.num_images)
        wall, cpu, samples = time_mappers({"old": PairedViewMapper(photometric="cpu"),
                                           "new": PairedViewMapper(),
                                           "new_device_crops": PairedViewMapper(crops_on_device=True)},
                                          records, args.num)
        files = [r["file_name"] for r in records[:20]]
        jpegs = [f for f in files if f.lower().endswith((".jpg", ".jpeg"))]
        decode_ms, same_pixels = time_decoders(jpegs) if jpegs else ({}, None)
        image_size = list(read_rgb_image(files[0]).shape[:2])
        augment = {"cpu_1_thread": time_device_augment(samples, args.batch_per_gpu, torch.device("cpu"), repeats=1)}
        if torch.cuda.is_available():
            augment["cuda"] = time_device_augment(samples, args.batch_per_gpu, torch.device("cuda"), repeats=5)
    sizes = [tuple(s["views"].shape[-2:]) for s in samples]

    def workers(per_sample):
        return {str(t): math.ceil(args.batch_per_gpu * per_sample / t) for t in args.step_times}

    def figures(name):
        return {"ms_per_sample": round(1000 * wall[name], 2), "cpu_ms_per_sample": round(1000 * cpu[name], 2),
                "samples_per_s_per_worker": round(1 / wall[name], 2),
                "workers_per_gpu_for_step_time_s": workers(wall[name]),
                "workers_per_gpu_for_step_time_s_by_cpu_time": workers(cpu[name])}

    result = {
        "dataset": args.dataset or "grace_hopper_500x375_jpegs",
        "first_image_hw": image_size,
        "samples": args.num,
        **{name: figures(name) for name in wall},
        "speedup_wall": {name: round(wall["old"] / wall[name], 2) for name in wall if name != "old"},
        "speedup_cpu": {name: round(cpu["old"] / cpu[name], 2) for name in cpu if name != "old"},
        "goal_ms_per_sample": 40.0,
        "device_augment_ms_per_sample": {k: round(1000 * v, 2) for k, v in augment.items()},
        "decode_ms_per_image": decode_ms,
        "simplejpeg_same_pixels_as_pil": same_pixels,
        "mean_view_size": [round(float(np.mean([s[0] for s in sizes]))), round(float(np.mean([s[1] for s in sizes])))],
        "batch_per_gpu": args.batch_per_gpu,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"{'path':<18}{'wall ms':>9}{'CPU ms':>9}{'samples/s':>11}  workers per GPU at batch {args.batch_per_gpu} "
          f"for a step of {', '.join(f'{t}s' for t in args.step_times)} (by wall / by CPU time)")
    for name in wall:
        r = result[name]
        print(f"{name:<18}{r['ms_per_sample']:>9}{r['cpu_ms_per_sample']:>9}{r['samples_per_s_per_worker']:>11}  "
              + ", ".join(f"{a}/{b}" for a, b in zip(r["workers_per_gpu_for_step_time_s"].values(),
                                                     r["workers_per_gpu_for_step_time_s_by_cpu_time"].values())))
    print(f"speed-up over old, wall: {result['speedup_wall']}, CPU: {result['speedup_cpu']} (goal: <= 40 ms/sample); "
          "device-side work (crops + colour) per sample: "
          + ", ".join(f"{k} {v} ms" for k, v in result["device_augment_ms_per_sample"].items()))
    print("decode ms/image: " + ", ".join(f"{k} {v}" for k, v in decode_ms.items())
          + f"; simplejpeg == PIL pixels: {same_pixels}")
    print(json.dumps(result))
    return result
