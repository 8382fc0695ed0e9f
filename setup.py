"""The build step that pyproject.toml cannot express: the specs and reference files ship inside
the package (``ambcore/_project/``) so that an installed ``ambcore`` finds them outside a
checkout (``ambcore.paths``). Everything else is declared in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Files of the checkout that commands read at run time (paths relative to the checkout).
PROJECT_FILES = (
    "experiments/*.yaml",  # sweep, recipe, tuning and search-space specs
    "results/README.md",
    "results/thesis_tables.csv",  # the thesis' numbers (ambcore.report)
    "results/literature.csv",
    "results/*.json",  # tuning records (ambcore.tune), benchmark records
)
PACKAGE_DATA_DIR = "_project"


class BuildWithProjectFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "ambcore" / PACKAGE_DATA_DIR
        for pattern in PROJECT_FILES:
            for source in sorted(root.glob(pattern)):
                relative = source.relative_to(root)
                (target / relative.parent).mkdir(parents=True, exist_ok=True)
                self.copy_file(str(source), str(target / relative))


setup(cmdclass={"build_py": BuildWithProjectFiles})
