"""Builds the Rust library as part of `pip install ./python` / `pip wheel ./python`:
setuptools-rust runs `cargo build --release --lib` on ../Cargo.toml (the library crate
of this checkout; CARGO_TARGET_DIR is honoured) and puts the cdylib into the package
as pipeline/libpipeline.so, so the installed package (or wheel) carries its library.
The wheel is a platform wheel (linux_<arch>): the library links the system's OpenSSL 3
(libssl3), libelf1 and zlib1g — see python/README.md.

PIPELINE_LIB at run time still overrides the bundled library (docs/consumers.md)."""
import pathlib

from setuptools import setup
from setuptools_rust import Binding, RustExtension

HERE = pathlib.Path(__file__).resolve().parent

setup(
    rust_extensions=[
        RustExtension(
            "pipeline.libpipeline",
            path=str(HERE.parent / "Cargo.toml"),
            binding=Binding.NoBinding,
            py_limited_api=False,
        )
    ],
    package_data={"pipeline": ["py.typed", "*.pyi"]},
    zip_safe=False,
)
