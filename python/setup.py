"""Install-time helper: records the checkout that is being installed, so the installed
package finds that checkout's target/release/libpipeline.so (unless PIPELINE_LIB is
set). Set PIPELINE_BUNDLE_LIB=1 to copy libpipeline.so into the package instead."""
import os
import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent


class BuildPy(build_py):
    def run(self):
        super().run()
        pkg = pathlib.Path(self.build_lib) / "pipeline"
        (pkg / "_repo_root.txt").write_text(str(HERE.parent) + "\n")
        if os.environ.get("PIPELINE_BUNDLE_LIB"):
            target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent / "target"))
            shutil.copy2(target / "release" / "libpipeline.so", pkg / "libpipeline.so")


setup(cmdclass={"build_py": BuildPy})
