# D-FINE-M on HGNetV2 (the release's dfine_hgnetv2_m_coco detector; sizes in d_fine_hgnetv2_sizes.py).
from .d_fine_hgnetv2 import d_fine_hgnetv2_model

model = d_fine_hgnetv2_model("M")
