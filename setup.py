from setuptools import find_packages, setup

setup(
    name="autoprox",
    version="0.1.0",
    description="Auto-Prox: discover training-free proxies for ViT architecture search by genetic "
                "programming, and search ViTs with them",
    python_requires=">=3.9",
    packages=find_packages(include=["gp", "primitives", "vit_space", "vit_space.*", "runners"]),
    # ViT-Bench-101's two ground-truth files (the authors', Apache-2.0; see vit_space/data/bench/README.md)
    package_data={"vit_space.data": ["bench/*.json", "bench/README.md"]},
    install_requires=[
        "deap>=1.4", "torch>=2.1", "torchvision", "timm>=1.0", "numpy", "scipy", "joblib>=1.3",
        # Pillow 13 refuses posterize(bits=0), which timm's RandAugment (inc1) asks for at magnitude 10
        "tqdm", "matplotlib", "pillow<13", "dask[distributed]",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
)
