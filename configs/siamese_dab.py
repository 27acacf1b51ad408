# Siamese DETR baseline for DAB-DETR: fixed query groups (query i gets proposal floor(i / (N / n))), the other
# view's object feature *added* to the content query (as DisCo does), the field DAB-DETR takes fused features in, no CLD.
# Everything else as configs/disco_dab.py.
from .common.models.dab_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "dab")
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_dab"
