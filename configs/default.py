"""The reference PC workload (pcax tutorial 0): an MLP trained by predictive coding on MNIST.

MLP 784-128-128-128-10, tanh, a value node after each hidden layer, squared-error
output energy; T=4 inference steps of SGD (lr 0.01) on the nodes, then one Adam
step (lr 1e-3) on the weights; batch 256, 4 epochs. About 96% on MNIST.

This file defines and documents every field of examples/mnist's configs (type
and allowed values, then meaning); the others start from ``get_config()`` here
and state what they change. Override on the command line: ``--config.seed=1``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The default hyperparameters."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'mnist', 'fashion_mnist' or 'synthetic' (noisy blobs per class, no files).
    config.dataset = "mnist"
    # str or None: a folder with the four IDX .gz files (offline); None loads TFDS's dataset.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic'.
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic'.
    config.synthetic_test_size = 256

    # Model.
    # str: 'linen' (train.py) or 'nnx' (Flax NNX, train_nnx.py: model 'mlp' only).
    config.flax_api = "linen"
    # str: 'mlp', 'cnn' (conv blocks, then Dense layers), 'resnet', 'residual_mlp' (depth,
    # width, parameterization), 'flax_cnn' (Flax's MNIST CNN as Flax writes it, nodes by
    # fpc.with_nodes; of the model fields only value_init* and latent apply) or 'bpc'
    # (bidirectional PC: also generates an image per class into samples.png).
    config.model = "mlp"
    # str or None: the workdir of a finished run of the same network: a new run starts from
    # its newest weights (fine-tuning), e.g. of one with --config.algorithm=bp.
    config.init_checkpoint = config_dict.placeholder(str)
    # tuple of int > 0: widths of the hidden Dense layers, each followed by a value node
    # (after the conv blocks for 'cnn'); mlp, cnn and bpc.
    config.hidden_sizes = (128, 128, 128)
    # tuple of int > 0: channels of the conv blocks (3x3 conv, activation, 2x2 average pool,
    # value node); cnn.
    config.conv_features = (16, 32)
    # str: tanh, relu, leaky_relu, gelu, silu, elu, sigmoid, hard_tanh or linear.
    config.activation = "tanh"
    # int > 0: channels of the ResNet's stem (3x3 conv, stride 2, BatchNorm, value node).
    config.resnet_stem_features = 16
    # tuple of int > 0: channels of each ResNet stage; each stage after the first halves the
    # image.
    config.resnet_stage_features = (16, 32, 64)
    # int > 0: residual blocks per stage (conv-BN-act-conv-BN plus the skip, then a node).
    config.resnet_blocks_per_stage = 1
    # int >= 2: weight layers of 'residual_mlp' (input, depth - 2 blocks h + Dense(act(h)),
    # output), a value node after each but the last.
    config.depth = 8
    # int > 0: the width of the hidden layers of 'residual_mlp'.
    config.width = 128
    # str: 'residual_mlp' only: 'standard' (LeCun-normal kernels) or 'mupc' (muPC: N(0, 1)
    # kernels, outputs scaled by fpc.mupc_scalings).
    config.parameterization = "standard"
    # float >= 0: 'bpc' only: the precision of the backward (top-down) errors; 0 is PC.
    config.backward_precision = 0.001
    # float in [0, 1): dropout before the output layer, in training (one mask per batch).
    config.dropout_rate = 0.0

    # Predictive coding.
    # str: 'pc' (inference, then one weight step), 'ipc' (incremental PC: a node and weight
    # step at each of the T steps) or 'bp' (backprop of the output energy, nodes ignored).
    config.algorithm = "pc"
    # str: the output's energy against the one-hot target, also the reported loss:
    # 'squared_error' or 'cross_entropy' (on logits).
    config.output_energy = "squared_error"
    # int >= 0: T, node updates per batch (>= 1 for 'ipc'); with a tolerance, the most.
    config.inference_steps = 4
    # float > 0 or None: 'pc' only: stop inference once the RMS of dF/dv is at most this
    # (inference to equilibrium); None: exactly inference_steps steps.
    config.tolerance = config_dict.placeholder(float)
    # float > 0: SGD learning rate of the value nodes.
    config.node_learning_rate = 0.01
    # float in [0, 1): SGD momentum of the value nodes (0: plain SGD).
    config.node_momentum = 0.0
    # str: each batch's starting node values: 'forward' (the prediction), 'zeros', 'normal'.
    config.value_init = "forward"
    # float > 0: standard deviation of value_init='normal'.
    config.value_init_stddev = 1.0
    # str: what inference moves: 'value' (PC) or 'error' (ePC: each node's error v - mu).
    config.latent = "value"
    # float != 0 or None: output nudging beta: the output (under cross_entropy its softmax,
    # 0 < beta <= 1) is clamped to out - beta * (out - target), the weight gradient scaled
    # by 1 / beta; None: plain clamping.
    config.nudging = config_dict.placeholder(float)

    # Weights.
    # str: 'adam' or 'adamw' (Adam with decoupled weight decay).
    config.optimizer = "adam"
    # float > 0: learning rate of the weights (the peak, with a schedule).
    config.learning_rate = 1e-3
    # str: 'constant' or 'cosine' (decays to 0 over num_epochs).
    config.lr_schedule = "constant"
    # float >= 0: adamw's weight decay (0 with 'adam').
    config.weight_decay = 0.0

    # Loop.
    # str: 'epoch' (fpc.train_epoch: one lax.scan per epoch), 'batch' (a Python loop over one
    # jitted step; the same result) or 'auto' ('batch' for conv nets on CPU, else 'epoch').
    config.loop = "auto"
    # int > 0: examples per weight update (the epoch's last partial batch is dropped).
    config.batch_size = 256
    # int > 0: test examples evaluated at once (bounds the evaluation's memory).
    config.eval_batch_size = 1000
    # int > 0: passes over the training set (a resumed run trains up to this many).
    config.num_epochs = 4
    # int >= 0: seeds the initial weights, the data order and value_init='normal'.
    config.seed = 0
    # int > 0: checkpoints kept in workdir/checkpoints (one per epoch).
    config.checkpoints_to_keep = 3

    return config
