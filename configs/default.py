"""The reference PC workload (pcax tutorial 0): an MLP trained by predictive coding on MNIST.

MLP 784-128-128-128-10 with tanh and a value node after each hidden layer,
squared-error output energy, T=4 inference steps of SGD (lr 0.01) on the
nodes, then one Adam step (lr 1e-3) on the weights; batch 256, 4 epochs.
Expect about 96% MNIST test accuracy.

This file defines and documents every field of examples/mnist's configs (one
comment per field: its type and allowed values, then its meaning); the other
configs of examples/mnist start from ``get_config()`` here and state only what
they change. Override any field on the command line: ``--config.num_epochs=10``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The default hyperparameters."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'mnist', 'fashion_mnist' or 'synthetic' (class-dependent blobs with noise: a
    # learnable stand-in, no files).
    config.dataset = "mnist"
    # str or None: a folder with the four IDX .gz files, read with numpy alone (offline runs);
    # None loads `dataset` from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_test_size = 256

    # Model.
    # str: the Flax API the model is written in: 'linen' (train.py, models.py) or 'nnx' (Flax
    # NNX: train_nnx.py, models_nnx.py, fpc.nnx.train_step; model 'mlp' only; see configs/nnx.py).
    config.flax_api = "linen"
    # str: 'mlp' (Dense layers), 'cnn' (conv blocks, then Dense layers), 'resnet',
    # 'residual_mlp' (a deep residual MLP: depth, width, parameterization), 'flax_cnn' (the
    # CNN of Flax's MNIST example as Flax writes it, without PCNodes: trained through
    # fpc.with_nodes; of the model's fields, only value_init, value_init_stddev and latent
    # apply to it), or 'bpc' (bidirectional PC: an MLP of hidden_sizes with forward and
    # backward weights that classifies and, after training, generates an image per class
    # into samples.png; see backward_precision).
    config.model = "mlp"
    # str or None: the workdir of a finished run of the same model, data and optimizer (e.g.
    # one with --config.algorithm=bp): a new run starts from its newest checkpoint's weights
    # (fine-tuning) instead of a random initialisation; ignored when this run resumes.
    config.init_checkpoint = config_dict.placeholder(str)
    # tuple of int > 0: widths of the hidden Dense layers (after the conv blocks for 'cnn'),
    # each followed by a value node; mlp, cnn and bpc only.
    config.hidden_sizes = (128, 128, 128)
    # tuple of int > 0: channels of the conv blocks (3x3 nn.Conv, activation, 2x2 average pool,
    # value node); cnn only.
    config.conv_features = (16, 32)
    # str: hidden activation: tanh, relu, leaky_relu, gelu, silu, elu, sigmoid, hard_tanh, linear.
    config.activation = "tanh"
    # int > 0: channels of the ResNet's stem (3x3 conv with stride 2: 28x28 -> 14x14, BatchNorm,
    # activation, value node); resnet only.
    config.resnet_stem_features = 16
    # tuple of int > 0: channels of each stage of residual blocks; every stage after the first
    # starts with a stride-2 block (halves the image); resnet only.
    config.resnet_stage_features = (16, 32, 64)
    # int > 0: residual blocks per stage (conv-BN-act-conv-BN plus the skip, a 1x1 conv + BN
    # projection where the shape changes; then act and a value node); resnet only.
    config.resnet_blocks_per_stage = 1
    # int >= 2: weight layers of 'residual_mlp': the input layer, depth - 2 residual blocks
    # h + Dense(activation(h)) and the output layer, a value node after each but the last.
    config.depth = 8
    # int > 0: the width of every hidden layer of 'residual_mlp'.
    config.width = 128
    # str: 'residual_mlp' only: 'standard' (LeCun-normal kernels) or 'mupc' (muPC: N(0, 1)
    # kernels, layer outputs scaled by fpc.mupc_scalings: 1/sqrt(784), 1/sqrt(width * depth),
    # 1/width).
    config.parameterization = "standard"
    # float >= 0: 'bpc' only: bidirectional PC's alpha_b, the precision of the backward
    # predictions' errors (each layer predicted from the one above, from the label down to the
    # image) next to the forward errors' 1; 0 is PC with idle backward weights.
    config.backward_precision = 0.001
    # float in [0, 1): dropout before the output layer, in training only (one mask per batch;
    # see the README's "BatchNorm and Dropout under PC"); every model.
    config.dropout_rate = 0.0

    # Predictive coding.
    # str: learning rule: 'pc' (inference, then one weight step), 'ipc' (incremental PC: a
    # joint node and weight step at each of the T steps) or 'bp' (plain backprop of the output
    # energy, nodes ignored).
    config.algorithm = "pc"
    # str: energy of the output against the one-hot target: 'squared_error' or 'cross_entropy'
    # (on logits); also the reported loss.
    config.output_energy = "squared_error"
    # int >= 0: T, node updates per batch (for 'ipc', >= 1: joint node and weight updates per
    # batch); with a tolerance, the most.
    config.inference_steps = 4
    # float > 0 or None: inference to equilibrium: the node steps stop once the root mean square
    # of dF/dv is at most this, after inference_steps at most (fpc.PCTrainState's tolerance);
    # None: exactly inference_steps steps. 'pc' only.
    config.tolerance = config_dict.placeholder(float)
    # float > 0: SGD learning rate of the value nodes.
    config.node_learning_rate = 0.01
    # float in [0, 1): SGD momentum of the value nodes (0: plain SGD).
    config.node_momentum = 0.0
    # str: each batch's starting node values (fpc.PCNode's value_init): 'forward' (the
    # prediction), 'zeros' or 'normal'.
    config.value_init = "forward"
    # float > 0: standard deviation of value_init='normal'.
    config.value_init_stddev = 1.0
    # str: what inference moves (fpc.PCNode's latent): 'value' (PC) or 'error' (ePC: each
    # node's error v - mu, which reaches every layer in one step; same equilibrium).
    config.latent = "value"
    # float != 0 or None: output nudging beta: clamp the output to out - beta * (out - target)
    # (out: the feed-forward output) and scale the weight gradient by 1 / beta; 1 is clamping,
    # 0 < beta < 1 positive, beta < 0 negative nudging; None: plain clamping. 'pc'/'ipc' only.
    config.nudging = config_dict.placeholder(float)

    # Weights.
    # str: the weights' optimizer: 'adam' or 'adamw' (Adam with decoupled weight decay).
    config.optimizer = "adam"
    # float > 0: learning rate of the weights (the peak, with a schedule).
    config.learning_rate = 1e-3
    # str: 'constant', or 'cosine' (decays to 0 over num_epochs; more epochs on resume change it).
    config.lr_schedule = "constant"
    # float >= 0: adamw's weight decay (must be 0 with 'adam').
    config.weight_decay = 0.0

    # Loop.
    # str: 'epoch' (fpc.train_epoch: one lax.scan per epoch), 'batch' (a Python loop over one
    # jitted train_step; same batches, keys and metrics) or 'auto' ('batch' for the conv nets
    # 'cnn', 'resnet' and 'flax_cnn' on CPU, else 'epoch'); see the README's config.loop.
    config.loop = "auto"
    # int > 0: examples per weight update, at most the training set; the epoch's last partial
    # batch is dropped.
    config.batch_size = 256
    # int > 0: test examples evaluated at once (bounds the evaluation's memory).
    config.eval_batch_size = 1000
    # int > 0: passes over the training set (a resumed run trains up to this many).
    config.num_epochs = 4
    # int >= 0: seeds the initial weights, the data order and value_init='normal'.
    config.seed = 0
    # int > 0: orbax checkpoints kept in workdir/checkpoints (one is saved per epoch).
    config.checkpoints_to_keep = 3

    return config
