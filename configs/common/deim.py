# DEIM's training recipe (Huang et al., CVPR 2025) as a fine-tuning option for RT-DETR (and, by the same call,
# for D-FINE): the matchability-aware loss in place of the varifocal loss (loss_mal, gamma 1.5, no alpha, weight
# 1) and dense one-to-one matching (a mosaic of four images with probability 0.5 per image from epoch 4 to
# 4 + epochs // 2, the release's rule; short side 320, rotation +-10 deg, translation +-10 %, scale 0.5-1.5).
# The release reports +0.4 to +1.3 COCO AP over D-FINE and RT-DETRv2 in fewer epochs; not reproduced at COCO
# scale here (docs/deim.md). Not taken from the release: MixUp, its flat-cosine schedule, SiLU decoder activations
# and unfrozen backbone BN. An experiment file calls it after its schedule:
#     deim_recipe(model, dataloader, epochs=24)
from disco_detr.data import MosaicDetrDatasetMapper


def deim_recipe(model, dataloader, *, epochs, mosaic_probability=0.5, mosaic_first_epoch=4):
    """MAL in ``model.criterion`` and the mosaic mapper (with the same mapper arguments) in ``dataloader.train``."""
    model.criterion.class_loss = "mal"
    dataloader.train.mapper._target_ = MosaicDetrDatasetMapper
    dataloader.train.mapper.mosaic_probability = mosaic_probability
    dataloader.train.mapper.mosaic_epochs = (mosaic_first_epoch, mosaic_first_epoch + epochs // 2)
