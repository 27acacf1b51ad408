# DETReg pre-training (Bar et al., CVPR 2022) of multi-scale Deformable DETR R50, the release's own setting:
# selective-search proposals (the first 30 per image), one augmented view, objectness = the detector's own
# class head (sigmoid focal, weight 2), its own box head (L1 5, GIoU 2), an embedding head (MLP d -> d -> 512)
# regressing the frozen SwAV R50 C3 feature of each proposal's 128 x 128 crop (L1, weight 1, last layer only);
# matching cost class 2 / L1 5 / GIoU 2. Frozen SwAV R50 (train.init_checkpoint, the run refuses to start
# without it), AdamW 2e-4 with the sampling offsets and reference points at x0.1, weight decay 1e-4, clip
# 0.1, batch 192, 50 epochs with the drop at 40 (the release: ImageNet-100; here the training set the run
# loads, mini-ImageNet by default, as the DisCo / Siamese configs).
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "deformable_ms")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_deformable_ms"
