# Table 4 baseline: Siamese DETR with 100 queries (VOC 46.9). Fine-tune with
# configs/finetune_cond_voc_q100.py.
from .common.models.conditional_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

_detector.num_queries = 100
dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "cond")
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_cond_q100"
