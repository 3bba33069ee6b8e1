"""Monte Carlo PC (MCPC): generative.py's decoder trained with Langevin inference.

Training's inference takes Langevin steps (fpc.langevin: each node step adds
Gaussian noise), so it samples the latent's posterior instead of finding its
mode, and the weight step at that sample follows the gradient of the data's
likelihood (Oliviers, Bogacz & Meulemans, 2024): the latents keep the spread
of the prior, and latents drawn from the prior decode to images like the
data. The scores of the samples and the choices below were measured on
Fashion-MNIST, seed 0 (examples/generative/README.md).
"""

import ml_collections

from configs import generative as generative_lib


def get_config() -> ml_collections.ConfigDict:
    """generative.py's decoder and data, trained by MCPC."""
    config = generative_lib.get_config()

    # The latent is the only node: with a hidden node of unit variance the latent carried
    # little (mean z² 0.11 against 0.50; reconstruction MSE 0.033 against 0.013) and the
    # samples look blotchier, though the classifier scores them alike.
    config.hidden_nodes = False
    # MCPC: Langevin steps at temperature 1 (the posterior itself).
    config.node_optimizer = "langevin"
    # Langevin steps take no momentum.
    config.node_momentum = 0.0
    # Langevin steps of 0.05 from z = 0: a burn-in before the sample the weights learn
    # from (60 steps scored alike: Fréchet distance 46 against 43).
    config.inference_steps = 30
    # Weight decay keeps PC's shrinking latents in check; MCPC's keep the prior's spread.
    # The issue-21 prototype's setting, not tuned here.
    config.weight_decay = 0.0
    # The noisy gradient learns more slowly than PC's (the issue-21 prototype's setting).
    config.learning_rate = 3e-3
    # 16 epochs scored no better (Fréchet distance 51, 18.6% confident).
    config.num_epochs = 8

    return config
