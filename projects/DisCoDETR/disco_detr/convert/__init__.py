"""Pure key-layout converters: other projects' state dicts -> our parameter names.

Each module maps one source layout (a dict of tensors) to our detectors' or backbones' keys and
reports what it kept and dropped; none reads a catalog or loads into a model. The model zoo runs
them on load (:mod:`disco_detr.model_zoo.layouts`), ``tools/convert/`` runs them offline.

:mod:`.torchvision_resnet`  torchvision / SwAV / MoCo ResNet -> detectron2 ResNet
:mod:`.resnet_vd`           RT-DETR release / timm / HuggingFace ResNet-vd -> :class:`~disco_detr.modeling.resnet_vd.ResNetVd`
:mod:`.hgnetv2`             D-FINE release / timm / HuggingFace HGNetV2 -> :class:`~disco_detr.modeling.hgnetv2.HGNetV2`
:mod:`.detrex`              detrex Conditional / Deformable / DAB / DINO DETR -> our detectors
:mod:`.rtdetr`              HuggingFace / release RT-DETR -> our RT-DETR
:mod:`.siamese_detr`        Siamese DETR's pre-trained detectors -> our detectors
"""
