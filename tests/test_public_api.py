"""The public API: what ``flax_pc`` exports, and the line between it and ``flax_pc._src``."""

import importlib
import pkgutil
import sys
import types

import flax_pc as fpc
from flax_pc import _src

#: Public submodules: namespaces of their own, whose names are not top-level.
SUBMODULES = {"energies", "diagnostics", "nnx"}


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


def test_node_rng_is_not_the_node_collection():
    assert fpc.NODE_RNG != fpc.NODES
