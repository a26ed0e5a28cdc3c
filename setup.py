"""Packaging that pyproject.toml cannot express: the stage and pipeline YAMLs live once, in the
top-level `stages/` folder of a checkout, and the wheel carries them as the `fusionlab.configs`
package (`fusionlab.packaged.config_dir()` finds them in either place). Everything else about
the package is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["fusionlab", "fusionlab.*"]), "fusionlab.configs"],
    package_dir={"fusionlab.configs": "stages"},
)
