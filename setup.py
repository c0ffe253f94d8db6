"""Install the digit_detectron detectron2 plugin: ``pip install -e .``.

detectron2 itself is not listed in ``install_requires``: it has no official PyPI wheel, so
``tools/setup_env.sh`` installs the pure-Python package of ``sal-detectron2==0.7.2`` (see README),
and an already importable detectron2 (e.g. a CUDA build) is kept.
"""

from setuptools import find_packages, setup

# Version bounds that the test suite runs with (Python 3.11, CPU).
INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.11",
    "pycocotools>=2.0.7,<2.1",
    "opencv-python-headless>=4.8,<5",
    "yacs>=0.1.8,<0.2",
    "numpy>=1.24,<3",
    # detectron2's own run-time imports.
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1,<1.4",
    "termcolor>=1.1,<4",
    "tabulate>=0.9,<0.11",
    "cloudpickle>=2.0,<4",
    "tqdm>4.29,<5",
    "matplotlib>=3.7,<4",
    "Pillow>=10.1,<14",  # 10.1: ImageFont.load_default(size), the built-in face of benchmarks/independent_numbers.py
    "tensorboard>=2.14,<3",
    "black>=23.0,<27",
    "packaging",
    "setuptools<81",  # detectron2.model_zoo imports pkg_resources
    # Data tools.
    "h5py>=3.8,<4",
    # The synthetic generator's photo backgrounds: the sample photos scikit-image ships (read as files).
    "scikit-image>=0.22,<0.27",
    "PyYAML>=5.1,<7",
]

setup(
    name="digit_detectron",
    version="0.1.0",
    description="Detectron2 plugin that detects digits in house-number photos and reads the number",
    python_requires=">=3.10",
    packages=find_packages(include=["digit_detectron", "digit_detectron.*"]),
    package_data={"digit_detectron": ["configs/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "export": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2"],  # tools/export_model.py --format onnx
        "dev": ["pytest>=7,<10", "ruff==0.17.6", "onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
    },
    entry_points={"console_scripts": ["digit-detectron=digit_detectron.command:console_main"]},
)
