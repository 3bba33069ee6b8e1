"""A convolutional PC network on MNIST: a value node after each conv block.

The layout of Flax's MNIST CNN (3x3 conv -> pool -> 3x3 conv -> pool -> Dense ->
Dense 10) at half its width, between it and PyTorch's example in size: conv
16 -> 2x2 avg pool -> conv 32 -> 2x2 avg pool -> Dense 128 -> Dense 10, relu, a
value node after each conv block and after the hidden Dense layer; trained
like default.py. Plain ``nn.Conv``; about 20 s per epoch on a 2-core CPU, where
``loop='auto'`` trains it with a jitted step per batch.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The CNN's hyperparameters."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'mnist', 'fashion_mnist' or 'synthetic' (a learnable stand-in, no files).
    config.dataset = "mnist"
    # str or None: a folder with the four IDX .gz files (offline runs); None loads from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_test_size = 256

    # Model.
    # str: 'mlp' (Dense layers), 'cnn' (conv blocks, then Dense layers) or 'resnet'.
    config.model = "cnn"
    # tuple of int > 0: widths of the hidden Dense layers, each followed by a value node.
    config.hidden_sizes = (128,)
    # tuple of int > 0: channels of the conv blocks (3x3 conv, 2x2 avg pool, value node); cnn only.
    config.conv_features = (16, 32)
    # str: hidden activation: tanh, relu, leaky_relu, gelu, silu, elu, sigmoid, hard_tanh, linear.
    config.activation = "relu"
    # int > 0: channels of the stem (3x3 conv, stride 2, BatchNorm, value node); resnet only.
    config.resnet_stem_features = 16
    # tuple of int > 0: channels of the stages (each after the first halves the image); resnet only.
    config.resnet_stage_features = (16, 32, 64)
    # int > 0: residual blocks (conv-BN-act-conv-BN, skip, act, value node) per stage; resnet only.
    config.resnet_blocks_per_stage = 1
    # float in [0, 1): dropout before the output layer in training (one mask per batch).
    config.dropout_rate = 0.0

    # Predictive coding.
    # str: learning rule: 'pc' (inference, then a weight step), 'ipc' (incremental PC:
    # nodes and weights step together) or 'bp' (plain backprop, nodes ignored).
    config.algorithm = "pc"
    # str: energy of the output against the one-hot target: 'squared_error' or 'cross_entropy'.
    config.output_energy = "squared_error"
    # int > 0: T, node updates per batch (for 'ipc': joint node and weight updates per batch).
    config.inference_steps = 4
    # float > 0: SGD learning rate of the value nodes.
    config.node_learning_rate = 0.01
    # float in [0, 1): SGD momentum of the value nodes (0: plain SGD).
    config.node_momentum = 0.0
    # str: each batch's starting node values: 'forward' (the prediction), 'zeros' or 'normal'.
    config.node_init = "forward"
    # float > 0: standard deviation of node_init='normal'.
    config.node_init_stddev = 1.0
    # float != 0 or None: output nudging beta: clamp the output to out - beta * (out - target)
    # and scale the weight gradient by 1 / beta (1: clamping; None: plain clamping).
    config.nudging = config_dict.placeholder(float)

    # Weights.
    # str: 'adam' or 'adamw' (Adam with decoupled weight decay).
    config.optimizer = "adam"
    # float > 0: learning rate of the weights.
    config.learning_rate = 1e-3
    # str: 'constant', or 'cosine' (decays to 0 over num_epochs; more epochs on resume change it).
    config.lr_schedule = "constant"
    # float >= 0: adamw's weight decay (must be 0 with 'adam').
    config.weight_decay = 0.0

    # Loop.
    # str: 'epoch' (one lax.scan per epoch), 'batch' (a jitted step per batch; same order and
    # results) or 'auto' ('batch' for the conv models on CPU, else 'epoch').
    config.loop = "auto"
    # int > 0: examples per weight update; the epoch's last partial batch is dropped.
    config.batch_size = 256
    # int > 0: test examples evaluated at once (bounds the evaluation's memory).
    config.eval_batch_size = 1000
    # int > 0: passes over the training set (a resumed run trains up to this many).
    config.num_epochs = 4
    # int >= 0: seeds the initial weights, the data order and node_init='normal'.
    config.seed = 0
    # int > 0: orbax checkpoints kept in workdir/checkpoints (one is saved per epoch).
    config.checkpoints_to_keep = 3

    return config
