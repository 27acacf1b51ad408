# Small preset: DETReg pre-training of D-FINE (its demo preset: frozen ImageNet MobileNetV2, d=128)
# on photos at 320-480 px, 100 epochs (configs/common/pretrain.py, preset "small"). Fine-tune the result with
# configs/small/rtdetr.py. Set your folder (docs/own_data.md) or run tools/pretrain_on_folder.py --preset small.
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "dfine", preset="small")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/small/detreg_dfine"
