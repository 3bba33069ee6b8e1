"""Diagnostics of deep PC networks: where the energy sits, and how hard inference is.

Two failure modes of deep PC networks show in these numbers (Innocenti et al.,
2025): the error signal fades on its way down (the first layer's energy is
orders of magnitude below the last one's, :func:`energy_ratio`), and the
inference landscape is ill-conditioned (the activity Hessian ``d2F/dv2`` has
a large :func:`hessian_condition_number`, so gradient descent on the nodes
needs many steps). The number of inference steps to converge is the ``steps``
of an :class:`~flax_pc.Equilibrium` (``metrics['inference_steps']`` of
:class:`~flax_pc.PCTrainState` with a tolerance).

Whether PC trains the network as backprop would shows in
:func:`gradient_alignment`: the cosine between a batch's PC weight gradient
and backprop's, parameter by parameter.
"""

from flax_pc._src.diagnostics import (
    GradientAlignment,
    activity_hessian,
    energy_ratio,
    gradient_alignment,
    hessian_condition_number,
    layer_energies,
)

__all__ = [
    "GradientAlignment",
    "activity_hessian",
    "energy_ratio",
    "gradient_alignment",
    "hessian_condition_number",
    "layer_energies",
]
