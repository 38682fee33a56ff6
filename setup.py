"""Ships the repository's configs/*.yaml inside the package (llmcycle/configs/), so `llmcycle run -c default`
works from an installed wheel; everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "llmcycle" / "configs"
        target.mkdir(parents=True, exist_ok=True)
        for config in sorted(Path(__file__).resolve().parent.joinpath("configs").glob("*.yaml")):
            shutil.copyfile(config, target / config.name)


setup(cmdclass={"build_py": BuildWithConfigs})
