# D-FINE's four COCO model sizes with the HGNetV2 backbone, as the release configures them (Peterande/D-FINE
# configs/dfine/include/dfine_hgnetv2.yml and dfine_hgnetv2_{s,m,l,x}_coco.yml; README for the reported numbers).
# A plain table: configs/common/models/d_fine_*.py read it to build the model of one size (docs/hgnetv2.md says how).
# backbone: disco_detr.modeling.build_hgnetv2 arguments in our conventions (the release's freeze_at -1 = our 0;
#   its freeze_at 0 with freeze_stem_only = our 1; freeze_norm False = "SyncBN" (its sync_bn: True; plain BN in one
#   process), True = "FrozenBN"); out_features stage2-4 (its return_idx [1, 2, 3]).
# encoder: D-FINE's hybrid encoder (hidden_dim, FFN of the one AIFI layer on stride 32, the CCFM blocks'
#   expansion and depth_mult), in_channels = the backbone's stage2-4 channels.
# decoder: hidden_dim, the encoder-to-decoder feature channels (feat_channels), layers, per-level sampling points,
#   FDR bins (reg_max) and reg_scale; 300 queries, 100 denoising queries, 8 heads, FFN 1024 in every size.
# train: the release's AdamW lr, backbone lr, weight decay, epochs and the epoch its strong augmentation stops.
# reported: COCO val2017 AP (COCO only / Objects365 then COCO), parameters (M), GFLOPs, T4 TensorRT FP16 latency (ms)
#   and the published checkpoints (not downloaded here: unverified).
_RELEASE = "https://github.com/Peterande/storage/releases/download/dfinev1.0/"

DFINE_HGNETV2_SIZES = {
    "S": dict(
        backbone=dict(name="B0", use_lab=True, freeze_at=0, norm="SyncBN"),
        encoder=dict(in_channels=(256, 512, 1024), hidden_dim=256, dim_feedforward=1024, expansion=0.5,
                     depth_mult=0.34),
        decoder=dict(hidden_dim=256, feat_channels=256, num_layers=3, num_points=(3, 6, 3), reg_max=32, reg_scale=4.0),
        train=dict(lr=2e-4, backbone_lr=1e-4, weight_decay=1e-4, epochs=132, stop_aug_epoch=120),
        reported=dict(coco_ap=48.5, obj365_coco_ap=50.7, params_m=10, gflops=25, latency_ms=3.49,
                      checkpoint=_RELEASE + "dfine_s_coco.pth", obj365_checkpoint=_RELEASE + "dfine_s_obj2coco.pth"),
    ),
    "M": dict(
        backbone=dict(name="B2", use_lab=True, freeze_at=0, norm="SyncBN"),
        encoder=dict(in_channels=(384, 768, 1536), hidden_dim=256, dim_feedforward=1024, expansion=1.0,
                     depth_mult=0.67),
        decoder=dict(hidden_dim=256, feat_channels=256, num_layers=4, num_points=(3, 6, 3), reg_max=32, reg_scale=4.0),
        train=dict(lr=2e-4, backbone_lr=2e-5, weight_decay=1e-4, epochs=132, stop_aug_epoch=120),
        reported=dict(coco_ap=52.3, obj365_coco_ap=55.1, params_m=19, gflops=57, latency_ms=5.62,
                      checkpoint=_RELEASE + "dfine_m_coco.pth", obj365_checkpoint=_RELEASE + "dfine_m_obj2coco.pth"),
    ),
    "L": dict(
        backbone=dict(name="B4", use_lab=False, freeze_at=1, norm="FrozenBN"),
        encoder=dict(in_channels=(512, 1024, 2048), hidden_dim=256, dim_feedforward=1024, expansion=1.0,
                     depth_mult=1.0),
        decoder=dict(hidden_dim=256, feat_channels=256, num_layers=6, num_points=(3, 6, 3), reg_max=32, reg_scale=4.0),
        train=dict(lr=2.5e-4, backbone_lr=1.25e-5, weight_decay=1.25e-4, epochs=80, stop_aug_epoch=72),
        reported=dict(coco_ap=54.0, obj365_coco_ap=57.3, params_m=31, gflops=91, latency_ms=8.07,
                      checkpoint=_RELEASE + "dfine_l_coco.pth", obj365_checkpoint=_RELEASE + "dfine_l_obj2coco_e25.pth"),
    ),
    "X": dict(
        backbone=dict(name="B5", use_lab=False, freeze_at=1, norm="FrozenBN"),
        encoder=dict(in_channels=(512, 1024, 2048), hidden_dim=384, dim_feedforward=2048, expansion=1.0,
                     depth_mult=1.0),
        decoder=dict(hidden_dim=256, feat_channels=384, num_layers=6, num_points=(3, 6, 3), reg_max=32, reg_scale=8.0),
        train=dict(lr=2.5e-4, backbone_lr=2.5e-6, weight_decay=1.25e-4, epochs=80, stop_aug_epoch=72),
        reported=dict(coco_ap=55.8, obj365_coco_ap=59.3, params_m=62, gflops=202, latency_ms=12.89,
                      checkpoint=_RELEASE + "dfine_x_coco.pth", obj365_checkpoint=_RELEASE + "dfine_x_obj2coco.pth"),
    ),
}
