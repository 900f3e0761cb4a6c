"""Install the repository's top-level folders under the single import name `embedcurate`.

The folders named by the design card (`pipeline/`, `model/`, `flows/`, ...) stay where
they are in the repository; setuptools' `package_dir` maps each to `embedcurate.<folder>`,
so installing the project adds exactly one top-level name to site-packages.
"""

from setuptools import find_packages, setup

MAPPED_FOLDERS = ("pipeline", "flows", "model", "prompts", "data_cards", "blends")


def _packages() -> list[str]:
    names = ["embedcurate", *(f"embedcurate.{p}" for p in find_packages("embedcurate"))]
    for folder in MAPPED_FOLDERS:
        names.append(f"embedcurate.{folder}")
        names.extend(f"embedcurate.{folder}.{p}" for p in find_packages(folder))
    return names


setup(
    packages=_packages(),
    package_dir={"embedcurate": "embedcurate", **{f"embedcurate.{f}": f for f in MAPPED_FOLDERS}},
)
