"""No node lost silently: a ``PCNode`` in a lifted transform that would drop its value.

Linen runs the body of a lifted transform (``nn.scan``, ``nn.RNN``, ``nn.vmap``,
``nn.remat``, ``nn.jit``, ...) in a scope of its own that can write only the
collections the transform carries (``variable_axes``, ``variable_broadcast``,
``variables=``). A ``PCNode`` there whose transform does not carry
:data:`~flax_pc.NODES` cannot store its value, and one whose transform does not
carry :data:`~flax_pc.ENERGIES` cannot record its energy: it would act as the
identity and the model would train without it, saying nothing. The node
initialisation pass (both collections mutable) sees every ``PCNode`` call,
those inside transforms included (``nn.intercept_methods``), and asks each
node's own scope whether it can write them: that is exactly whether the value
would be kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flax import linen as nn

from flax_pc._src.nodes import ENERGIES, NODES, PCNode, lifted_transforms, module_path


def transform_names(module: nn.Module) -> str:
    """``'nn.scan'``, ``'nn.remat inside nn.scan'``: the transforms around ``module``."""
    names = [f"nn.{name}" for name in lifted_transforms(module)]
    return " inside ".join(reversed(names)) or "a lifted transform"


def lost_node_message(module: nn.Module, missing: list[str]) -> str:
    """Why the node ``module`` would be lost, and the fix."""
    collections = " and ".join(missing)
    transform = transform_names(module)
    recurrent = " (nn.RNN runs its cell in one)" if "scan" in lifted_transforms(module) else ""
    lost = "its value would be dropped" if "fpc.NODES" in missing else "its energy would be lost"
    return (
        f"PCNode at {module_path(module)} is called inside {transform}{recurrent} that does "
        f"not carry {collections}, so {lost} and the model would train without the node. "
        "List flax_pc's collections in the transform's variable_axes: "
        "variable_axes={..., fpc.NODES: axis, fpc.ENERGIES: axis}, with the axis the "
        "transform stacks along (0 for nn.scan over layers, 1 for nn.RNN over a "
        "batch-major sequence); nn.remat and nn.jit carry them unless variables= says otherwise."
    )


def missing_collections(module: nn.Module) -> list[str]:
    """The flax_pc collections ``module``'s scope cannot write, as ``fpc.`` names."""
    return [
        name
        for name, collection in (("fpc.NODES", NODES), ("fpc.ENERGIES", ENERGIES))
        if not module.is_mutable_collection(collection)
    ]


@contextlib.contextmanager
def no_node_lost() -> Iterator[None]:
    """Within it, a ``PCNode`` call that cannot write NODES and ENERGIES raises.

    For the node initialisation pass, whose ``apply`` makes both mutable.
    """

    def check(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, PCNode) and context.method_name == "__call__":
            missing = missing_collections(module)
            if missing:
                raise ValueError(lost_node_message(module, missing))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(check):
        yield
