"""Maps the top-level ``models/`` (demo checkpoints and cards) and ``assets/`` (example photos) into the wheel as
``attnviz/models/`` and ``attnviz/assets/``; everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["attnviz*"]), "attnviz.models", "attnviz.assets"],
    package_dir={"attnviz.models": "models", "attnviz.assets": "assets"},
)
