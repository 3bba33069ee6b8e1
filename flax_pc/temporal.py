"""Temporal predictive coding (tPC): sequences, filtering and sequence memory.

A tPC model is an ordinary flax_pc model whose input is the latent inferred
at the previous time step (held fixed) and, optionally, the step's control
input. A :class:`~flax_pc.PCNode` holds the latent ``z_t``; the model's
output predicts the step's observation ``y_t``::

    class Tracker(nn.Module):  # z_t = A z_{t-1} + B u_t + noise, y_t = C z_t + noise
        @nn.compact
        def __call__(self, inputs):
            previous, control = inputs  # the latent inferred at t-1 [B, H]; u_t [B, U]
            prior = nn.Dense(H, use_bias=False)(previous) + nn.Dense(H, use_bias=False)(control)
            z = fpc.PCNode(name="latent")(prior)  # the latent at t, predicted from t-1
            return nn.Dense(D, use_bias=False)(z)  # the prediction of y_t

At each step the nodes start at their prediction, inference settles them with
``y_t`` clamped through the output energy, and the ``latent`` node's value is
the next step's input. Each step is an ordinary PC network's inference
(:func:`flax_pc.infer`) and weight step (:class:`flax_pc.PCTrainState`'s);
these functions carry the latent from step to step in one ``lax.scan`` over
time (Millidge et al., 2024; Tang et al., 2023):

- :func:`infer_sequence`: inference over a sequence, the weights fixed
  (filtering: the latents given the observations up to each step);
- :func:`train_sequence`: the same with a weight step per time step, or one
  per sequence;
- :func:`predict_sequence`: the model run forward from a latent without
  observations (a memorised sequence recalled from its initial latent).

Sequences are time-major: observations and controls ``[T, B, ...]``. The
:mod:`flax_pc.nnx` functions of the same names take an NNX model.
"""

from flax_pc._src.temporal import SequenceResult, infer_sequence, predict_sequence, train_sequence

__all__ = ["SequenceResult", "infer_sequence", "predict_sequence", "train_sequence"]
