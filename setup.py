"""Installs the packages ``disco_detr`` and ``disco_detr_runtime`` (the torch-free deployment runtime), whose code
lives under projects/DisCoDETR."""
from setuptools import find_packages, setup

setup(
    name="disco_detr",
    version="0.1.0",
    description="DisCo DETR: distance-aware multi-view contrastive pre-training for DETR detectors "
    "(a Detectron2 project)",
    python_requires=">=3.10",
    package_dir={"": "projects/DisCoDETR"},
    packages=find_packages(where="projects/DisCoDETR"),
    install_requires=[],  # installed by the Makefile (see requirements.txt and the README)
    extras_require={
        # tools/export_model.py, tools/predict.py --model, tools/benchmarks/benchmark_onnx.py, tests/test_export.py,
        # tests/test_openvino.py, tests/test_predict_runtime.py (the Makefile installs it)
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "openvino>=2024.0"],
    },
)
