"""The public API: what ``flax_pc`` exports, and the line between it and ``flax_pc._src``."""

import importlib
import pkgutil
import re
import sys
import types

import flax_pc as fpc
from flax_pc import _src

#: Public submodules: namespaces of their own, whose names are not top-level.
SUBMODULES = {"energies", "diagnostics", "nnx", "temporal"}


def _src_modules():
    for info in pkgutil.walk_packages(_src.__path__, prefix="flax_pc._src."):
        yield importlib.import_module(info.name)


def test_every_public_name_is_exported_once_from_the_module_that_defines_it():
    # A name is unique within its public namespace: fpc.nnx.PCNode and fpc.PCNode are two.
    namespaces = [fpc] + [getattr(fpc, name) for name in SUBMODULES & set(fpc.__all__)]
    exported = []
    for module in _src_modules():
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            homes = [ns.__name__ for ns in namespaces if getattr(ns, name, None) is value]
            assert len(homes) == 1, (
                f"{module.__name__}.{name} is public in {homes or 'no namespace'}"
            )
            assert name in vars(sys.modules[homes[0]])["__all__"], (homes[0], name)
            exported.append(name)
    assert set(fpc.__all__) - SUBMODULES <= set(exported)


def test_the_top_level_stays_small():
    assert len(fpc.__all__) <= 28, sorted(fpc.__all__)
    public = {name for name in vars(fpc) if not name.startswith("_")}
    assert public == set(fpc.__all__), public ^ set(fpc.__all__)


def test_submodules_are_modules_that_list_what_they_define():
    for name in SUBMODULES & set(fpc.__all__):
        module = getattr(fpc, name)
        assert isinstance(module, types.ModuleType)
        defined = {
            key
            for key, value in vars(module).items()
            if not key.startswith("_")
            and not isinstance(value, types.ModuleType)
            and getattr(value, "__module__", "").startswith("flax_pc")
        }
        assert set(module.__all__) == defined, (name, set(module.__all__) ^ defined)


def test_the_noise_stream_is_not_the_node_collection():
    assert fpc.NOISE != fpc.NODES


def _public_objects():
    """``(qualified name, object)`` for every public name, with the public members of classes."""
    namespaces = [fpc] + [getattr(fpc, name) for name in sorted(SUBMODULES)]
    for namespace in namespaces:
        yield namespace.__name__, namespace
        for name in namespace.__all__:
            value = getattr(namespace, name)
            if isinstance(value, types.ModuleType):
                continue
            yield f"{namespace.__name__}.{name}", value
            if isinstance(value, type):
                for member, attribute in vars(value).items():
                    if not member.startswith("_") or member == "__call__":
                        yield f"{namespace.__name__}.{name}.{member}", attribute


def _docstring(value) -> str:
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return getattr(value, "__doc__", None) or ""


def test_public_docstrings_name_only_public_shipped_things():
    private_modules = {
        info.name.rsplit(".", 1)[1]: importlib.import_module(info.name)
        for info in pkgutil.walk_packages(_src.__path__, prefix="flax_pc._src.")
    }
    outside_the_wheel = re.compile(r"\b(benchmarks|examples|tests|docs|configs)/|README|CHANGELOG")
    problems = []
    for name, value in _public_objects():
        doc = _docstring(value)
        if re.search(r"_src\.\w", doc):
            problems.append(f"{name}: names flax_pc._src")
        outside = outside_the_wheel.search(doc)
        if outside:
            problems.append(f"{name}: names {outside[0]!r}, not in the wheel")
        # ``inference.resolve_unroll``: an attribute of a private module (not ``inference.steps``,
        # an argument's attribute), unless the same object is public.
        for module_name, attribute in re.findall(r"``([a-z_]+)\.([A-Za-z_]+)", doc):
            module = private_modules.get(module_name)
            target = getattr(module, attribute, None) if module else None
            if target is not None and attribute not in getattr(fpc, "__all__", ()):
                problems.append(f"{name}: names the private {module_name}.{attribute}")
    assert not problems, "\n".join(problems)
