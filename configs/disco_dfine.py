# DisCo DETR pre-training of D-FINE R50-vd: frozen ResNet-50-vd initialised from the
# SSLD ImageNet weights (tools/convert/convert_resnet_vd.py --source rtdetr; train.init_checkpoint must hold them),
# object features RoIAlign 7x7 on the stride 8/16/32 maps and crop features the pooled stride 8/16/32 stages
# (512 + 1024 + 2048 channels, concatenated), lambda_0 = 3 (L_rec), DMOQF + CLD (lambda_3 = 2), the paper's
# additive fusion into the content queries of the encoder's top-300 selection, and the paper's DisCo data,
# optimiser and 40/60 schedule. IoU-aware selection stays on and its heads are trained by the per-layer
# localisation loss; denoising is off (reasons in disco_detr/modeling/detectors/rt_detr.py). The distribution
# losses (FGL against the boxes, DDF) run on the matched layers: docs/pretraining.md, "D-FINE".
from .common.pretrain import pretraining

_cfg = pretraining("disco", "dfine")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_dfine"
