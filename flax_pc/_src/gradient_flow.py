"""``GradientFlow``: inference as an ODE, solved by diffrax (an optional dependency)."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["GradientFlow"]


def import_diffrax() -> Any:
    try:
        return importlib.import_module("diffrax")
    except ImportError:
        raise ImportError(
            "fpc.GradientFlow solves inference as an ODE with diffrax, which is not installed: "
            "pip install 'flax_pc[ode]' (or pip install diffrax)."
        ) from None


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Inference as the ODE ``dv/dt = -dF/dv``, solved by diffrax.

    Pass it as ``node_tx`` to :func:`infer_to_equilibrium` or
    :class:`~flax_pc.PCTrainState` instead of an optax transform.

    Attributes:
      solver: a diffrax solver; ``None`` is ``diffrax.Tsit5()`` (5th order,
        adaptive). jpc's default ``diffrax.Heun()`` works too but needs many
        more steps for the same tolerance.
      stepsize_controller: a diffrax step-size controller; ``None`` is
        ``diffrax.PIDController(rtol=1e-6, atol=1e-6)``. With
        ``diffrax.ConstantStepSize()`` give ``dt0``.
      t1: the time horizon: the flow stops at ``t = t1`` at the latest.
      dt0: the first step size; ``None`` lets an adaptive controller choose.

    Near equilibrium an explicit solver with an adaptive step size runs at the
    edge of its stability, where ``rms(dF/dv)`` hovers at about the
    controller's ``atol`` times the largest curvature of ``F``: give a
    ``tolerance`` well above ``atol`` (e.g. 10x) or the flow runs to ``t1``.

    Example:
      >>> import flax_pc as fpc
      >>> flow = fpc.GradientFlow(t1=10.0)  # Tsit5 with a PID controller
    """

    solver: Any = None
    stepsize_controller: Any = None
    t1: float = 20.0
    dt0: float | None = None

    def __post_init__(self) -> None:
        diffrax = import_diffrax()
        if isinstance(self.t1, bool) or not isinstance(self.t1, (int, float)) or self.t1 <= 0:
            raise ValueError(f"GradientFlow: t1 must be a number > 0, got {self.t1!r}.")
        if self.dt0 is not None and not (isinstance(self.dt0, (int, float)) and self.dt0 > 0):
            raise ValueError(f"GradientFlow: dt0 must be a number > 0 or None, got {self.dt0!r}.")
        if self.solver is not None and not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(
                "GradientFlow: solver must be a diffrax solver (e.g. diffrax.Heun()), got "
                f"{type(self.solver).__name__}."
            )
        if self.stepsize_controller is not None and not isinstance(
            self.stepsize_controller, diffrax.AbstractStepSizeController
        ):
            raise TypeError(
                "GradientFlow: stepsize_controller must be a diffrax step-size controller "
                f"(e.g. diffrax.PIDController(rtol=1e-3, atol=1e-3)), got "
                f"{type(self.stepsize_controller).__name__}."
            )
        if self.dt0 is None and isinstance(self.stepsize_controller, diffrax.ConstantStepSize):
            raise ValueError("GradientFlow: diffrax.ConstantStepSize() needs dt0 (the step size).")
