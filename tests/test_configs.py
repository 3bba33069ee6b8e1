"""configs/*.py load and validate; every bad field gets its one-line error; the models.

The configs' layout: ``default.py`` (examples/mnist) and ``generative.py``
(examples/generative) define and document every field; every other config
starts from one of them (or from a config derived from one) and states only what
it changes, each change with a comment saying why.
"""

import ast
import importlib.util
import operator
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_pc as fpc
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError
from examples.mnist import models, models_bpc, models_deep, train, train_nnx
from examples.mnist.models import ACTIVATIONS

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = ROOT / "configs"

# configs/ is shared with other examples: these are examples/mnist's.
MNIST_CONFIGS = (
    "default",
    "backprop",
    "bpc",
    "cnn",
    "fashion_mnist",
    "fashion_mnist_ipc",
    "flax_cnn",
    "ipc",
    "mupc",
    "nnx",
    "resnet",
    "test",
)
CONFIG_FILES = [CONFIGS / f"{name}.py" for name in MNIST_CONFIGS]

# The configs that define and document every field: one per example.
DEFAULTS = ("default", "generative", "tpc", "memory", "lm")
# Every other config, with the config it starts from, and that one's default.
BASES = {
    "backprop": "default",
    "bpc": "default",
    "cnn": "default",
    "fashion_mnist": "default",
    "fashion_mnist_ipc": "fashion_mnist",
    "flax_cnn": "cnn",
    "ipc": "default",
    "mupc": "default",
    "nnx": "default",
    "resnet": "default",
    "test": "default",
    "generative_test": "generative",
    "generative_mcpc": "generative",
    "lm_bp": "lm",
}


def default_of(name: str) -> str:
    while name in BASES:
        name = BASES[name]
    return name


def load_config(name: str):
    path = CONFIGS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def assigned_fields(name: str) -> list[tuple[int, str]]:
    """(line number, field) of each ``config.<field> = ...`` in configs/<name>.py."""
    tree = ast.parse((CONFIGS / f"{name}.py").read_text())
    return [
        (node.lineno, target.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "config"
    ]


def test_the_expected_configs_exist():
    for path in CONFIG_FILES:
        assert path.is_file(), path
    # Every file in configs/ is a default or derives from one (a new file must be listed).
    names = {p.stem for p in CONFIGS.glob("*.py")} - {"__init__"}
    assert names == set(DEFAULTS) | set(BASES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    config = load_config(path.stem)
    train.validate_config(config)
    # Complete: every config has every field the example reads.
    assert set(config.keys()) == set(load_config("default").keys())


@pytest.mark.parametrize("name", DEFAULTS)
def test_every_field_of_the_defaults_is_documented(name):
    """Each field of a default config is set once, under a comment that gives its type first."""
    lines = (CONFIGS / f"{name}.py").read_text().splitlines()
    fields = assigned_fields(name)
    assert sorted(field for _, field in fields) == sorted(load_config(name).keys())
    for number, field in fields:
        line = lines[number - 1]
        assert "#" not in line, f"{name}.py:{number}: the comment goes above: {line.strip()}"
        comment = []
        for above in reversed(lines[: number - 1]):
            if not above.strip().startswith("#"):
                break
            comment.insert(0, above.strip())
        assert comment, f"{name}.py:{number} has no comment: {line.strip()}"
        # The comment block may start with a section heading ("# Data."); then the type.
        typed = [c for c in comment if re.match(r"# (str|int|float|bool|tuple)\b[^:]*: \S", c)]
        assert typed, f"{name}.py:{number}: the comment on {field} does not start with its type"


@pytest.mark.parametrize("name", sorted(BASES))
def test_derived_configs_state_only_what_they_change(name):
    """A derived config starts from its base and sets only fields it changes, each with a why."""
    base, config = load_config(BASES[name]), load_config(name)
    # The same fields as its default: no field added, none left out.
    assert set(config.keys()) == set(load_config(default_of(name)).keys())
    text = (CONFIGS / f"{name}.py").read_text()
    assert f"from configs import {BASES[name]} as {BASES[name]}_lib" in text
    assert f"config = {BASES[name]}_lib.get_config()" in text
    assert "ConfigDict(" not in text and "placeholder(" not in text
    lines = text.splitlines()
    fields = assigned_fields(name)
    assert len({field for _, field in fields}) == len(fields), f"{name}.py sets a field twice"
    for number, field in fields:
        line = lines[number - 1]
        # No silent restating: every field it sets differs from its base's value.
        assert config[field] != base[field], (
            f"{name}.py:{number} restates {BASES[name]}.py's value: {line.strip()}"
        )
        assert lines[number - 2].strip().startswith("#"), (
            f"{name}.py:{number}: say why above the change: {line.strip()}"
        )
    # And every field that differs from its base is set here, visibly.
    changed = {key for key in config.keys() if config[key] != base[key]}
    assert changed == {field for _, field in fields}


def test_readmes_link_to_the_field_documentation_instead_of_repeating_it():
    for readme, default in [("mnist", "default"), ("generative", "generative")]:
        text = (ROOT / "examples" / readme / "README.md").read_text()
        assert f"configs/{default}.py" in text
        assert "| field | type | default | meaning |" not in text


def test_default_is_the_reference_workload():
    config = load_config("default")
    assert (config.dataset, config.model, config.activation) == ("mnist", "mlp", "tanh")
    assert tuple(config.hidden_sizes) == (128, 128, 128)
    assert (config.algorithm, config.output_energy) == ("pc", "squared_error")
    assert (config.inference_steps, config.node_learning_rate, config.node_momentum) == (4, 0.01, 0)
    assert (config.optimizer, config.learning_rate, config.lr_schedule) == (
        "adam",
        1e-3,
        "constant",
    )
    assert (config.batch_size, config.num_epochs, config.seed) == (256, 4, 0)


def test_variants_differ_from_default_where_they_say():
    default = load_config("default").to_dict()
    assert {k for k, v in load_config("backprop").to_dict().items() if default[k] != v} == {
        "algorithm"
    }
    assert {k for k, v in load_config("ipc").to_dict().items() if default[k] != v} == {"algorithm"}
    assert {k for k, v in load_config("nnx").to_dict().items() if default[k] != v} == {"flax_api"}
    assert load_config("cnn").model == "cnn"
    resnet = load_config("resnet")
    assert (resnet.dataset, resnet.model, resnet.algorithm) == ("fashion_mnist", "resnet", "pc")
    fashion = load_config("fashion_mnist")
    assert fashion.dataset == "fashion_mnist" and tuple(fashion.hidden_sizes) == (128, 128, 128)
    fashion_ipc = load_config("fashion_mnist_ipc").to_dict()
    assert {k for k, v in fashion_ipc.items() if fashion[k] != v} == {
        "algorithm",
        "activation",
        "inference_steps",
        "node_learning_rate",
    }


BAD_FIELDS = [
    ("dataset", "cifar10", "expected one of"),
    ("model", "vgg", "expected one of"),
    ("flax_api", "NNX", "expected one of"),
    ("flax_api", "haiku", "expected one of"),
    ("hidden_sizes", (128, 0), "tuple of ints > 0"),
    ("hidden_sizes", (), "non-empty tuple"),
    ("hidden_sizes", (64, "a"), "tuple of ints > 0"),
    ("activation", "swish2", "expected one of"),
    ("output_energy", "hinge", "expected one of"),
    ("node_learning_rate", 0.0, "number > 0"),
    ("node_learning_rate", -0.1, "number > 0"),
    ("node_learning_rate", float("nan"), "number > 0"),
    ("node_momentum", 1.0, r"\[0, 1\)"),
    ("value_init_stddev", 0.0, "number > 0"),
    ("optimizer", "sgd", "expected one of"),
    ("learning_rate", -1e-3, "number > 0"),
    ("lr_schedule", "linear", "expected one of"),
    ("weight_decay", -1.0, "number >= 0"),
    ("weight_decay", 1e-4, "needs config.optimizer = 'adamw'"),
    ("batch_size", 0, "int > 0"),
    ("batch_size", -256, "int > 0"),
    ("eval_batch_size", 0, "int > 0"),
    ("num_epochs", 0, "int > 0"),
    ("seed", -1, "int >= 0"),
    ("checkpoints_to_keep", 0, "int > 0"),
    ("synthetic_train_size", 0, "int > 0"),
    ("dropout_rate", -0.1, r"\[0, 1\)"),
    ("dropout_rate", 1.0, r"\[0, 1\)"),
    ("dropout_rate", float("nan"), r"\[0, 1\)"),
    ("loop", "scan", "expected one of"),
    ("resnet_stem_features", 0, "int > 0"),
    ("resnet_blocks_per_stage", 0, "int > 0"),
    ("resnet_stage_features", (16, -32), "tuple of ints > 0"),
    ("depth", 1, "int >= 2"),
    ("width", 0, "int > 0"),
    ("parameterization", "mup", "expected one of"),
    ("parameterization", "mupc", "applies to model 'residual_mlp' only"),
    ("backward_precision", -0.1, "number >= 0"),
    ("backward_precision", float("nan"), "number >= 0"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_bad_field(field, value, message):
    config = load_config("default")
    config[field] = value
    with pytest.raises(ConfigError, match=message) as error:
        train.validate_config(config)
    assert str(error.value).startswith(f"config.{field}")
    assert "\n" not in str(error.value)


def test_the_nnx_config_validates_and_builds_the_reference_mlp():
    config = load_config("nnx")
    train_nnx.validate_config(config)
    model = train_nnx.abstract_model(config)
    kernels = [layer.kernel.shape for layer in (*model.hidden, model.out)]
    assert kernels == [(784, 128), (128, 128), (128, 128), (128, 10)]
    assert len(model.nodes) == 3 and model.act is ACTIVATIONS["tanh"]
    config.model = "cnn"
    with pytest.raises(ConfigError, match=r"config.flax_api = 'nnx' trains model 'mlp' only"):
        train_nnx.validate_config(config)


def test_sizes_an_unused_model_part_may_be_empty_but_not_bad():
    config = load_config("cnn")
    config.conv_features = ()
    with pytest.raises(ConfigError, match=r"expected a non-empty tuple"):
        train.validate_config(config)
    config = load_config("default")
    config.conv_features = ()  # the MLP has no conv blocks
    train.validate_config(config)
    config.conv_features = (16, 0)
    with pytest.raises(ConfigError, match=r"expected a tuple of ints > 0\.$"):
        train.validate_config(config)


# flax_pc's own arguments, under its names: its errors, one line each, before the workdir.
LIBRARY_FIELDS = [
    ("algorithm", "ep", "algorithm must be one of"),
    ("inference_steps", -1, "Inference: steps must be >= 0"),
    ("value_init", "ones", "value_init must be one of"),
    ("latent", "errors", "latent must be 'value'"),
    ("nudging", 0.0, "nudging=0 gives no learning signal"),
    ("tolerance", 0.0, "tolerance must be a number > 0"),
    ("tolerance", -1e-3, "tolerance must be a number > 0"),
]


@pytest.mark.parametrize("field, value, message", LIBRARY_FIELDS)
def test_the_library_checks_its_own_fields(field, value, message, mnist_config, tmp_path):
    config = mnist_config(**{field: value})
    train.validate_config(config)  # not the example's to check
    with pytest.raises(ConfigError, match=message) as error:
        train.train_and_evaluate(config, str(tmp_path / "new"))
    assert "\n" not in str(error.value)
    assert isinstance(error.value.__cause__, (ValueError, TypeError))  # the library's error
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "name, field, value, message",
    [
        ("backprop", "nudging", 0.5, "algorithm='bp' .* takes no nudging"),
        ("ipc", "tolerance", 1e-3, "algorithm='ipc' .* has no inference to equilibrium"),
    ],
)
def test_pc_only_fields(name, field, value, message):
    config = load_config(name)
    config[field] = value
    train.validate_config(config)
    with pytest.raises(ConfigError, match=message), workdir_lib.config_errors():
        train.create_train_state(config, jax.random.key(0), steps_per_epoch=1)


def test_backprop_is_created_with_the_inference_it_ignores():
    config = load_config("backprop")
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=1)
    assert state.algorithm == "bp" and isinstance(state.inference, fpc.Inference)
    assert state.inference.steps == config.inference_steps


@pytest.mark.parametrize(
    "field, value, attribute",
    [("nudging", 0.5, "nudging"), ("tolerance", 1e-3, "inference.tolerance")],
)
def test_pc_fields_reach_the_train_state(field, value, attribute):
    config = load_config("test")
    config[field] = value
    train.validate_config(config)
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=1)
    assert operator.attrgetter(attribute)(state) == value


def test_bpc_is_the_reference_mlp_with_backward_weights_and_stronger_inference():
    default, bpc = load_config("default").to_dict(), load_config("bpc").to_dict()
    assert {k for k, v in bpc.items() if default[k] != v} == {
        "model",
        "node_learning_rate",
        "inference_steps",
    }
    model = train.create_model(load_config("bpc"))
    assert isinstance(model, models_bpc.BPC)
    assert (tuple(model.hidden_sizes), model.backward_precision) == ((128, 128, 128), 0.001)
    config = load_config("bpc")
    config.hidden_sizes = ()
    with pytest.raises(ConfigError, match=r"config.hidden_sizes = \(\): expected a non-empty"):
        train.validate_config(config)


def test_cnn_needs_conv_features():
    config = load_config("cnn")
    config.conv_features = ()
    with pytest.raises(ConfigError, match="config.conv_features"):
        train.validate_config(config)


def test_resnet_needs_stage_features():
    config = load_config("resnet")
    config.resnet_stage_features = ()
    with pytest.raises(ConfigError, match="config.resnet_stage_features"):
        train.validate_config(config)


def test_mupc_config_builds_the_64_layer_mupc_network():
    config = load_config("mupc")
    model = train.create_model(config)
    assert (model.depth, model.width, model.mupc, model.node.keywords["latent"]) == (
        64,
        128,
        True,
        "error",
    )
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    )
    kernels = [variables["params"][f"ScaledDense_{i}"]["kernel"].shape for i in range(64)]
    assert kernels == [(784, 128)] + [(128, 128)] * 62 + [(128, 10)]
    assert len(variables[fpc.NODES]) == 63


def test_cnn_uses_nn_conv():
    config = load_config("cnn")
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=10)
    assert set(state.params) >= {"Conv_0", "Conv_1"}
    assert jnp.asarray(state.params["Conv_0"]["kernel"]).shape == (3, 3, 1, 16)


@pytest.mark.parametrize(
    "name, num_params, num_nodes, model_state",
    [("default", 134_794, 3, set()), ("cnn", 0, 3, set()), ("resnet", 0, 4, {"batch_stats"})],
)
def test_train_state_for_config(name, num_params, num_nodes, model_state):
    config = load_config(name)
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=10)
    params = sum(p.size for p in jax.tree_util.tree_leaves(state.params))
    if num_params:
        assert params == num_params
    assert set(state.model_state) == model_state
    images = jnp.zeros((2, 28, 28, 1))
    model = train.create_model(config)
    output, nodes = jax.jit(
        lambda state: (
            model.apply({"params": state.params, **state.model_state}, images, train=False),
            fpc.init_nodes(
                state.apply_fn, state.params, images, model_state=state.model_state, rng=None
            ),
        )
    )(state)
    assert output.shape == (2, 10)
    assert len(jax.tree_util.tree_leaves(nodes)) == num_nodes


def test_resnet_shapes_and_projections():
    model = models_deep.ResNet(stem_features=4, stage_features=(4, 8), blocks_per_stage=2)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    params = variables["params"]
    assert "projection" not in params["ResidualBlock_0"]  # 4 -> 4 at 14x14: identity skip
    assert jnp.asarray(params["ResidualBlock_2"]["projection"]["kernel"]).shape == (1, 1, 4, 8)
    assert "projection" not in params["ResidualBlock_3"]
    assert set(variables["batch_stats"]) == set(params) - {"stem", "Dense_0"}
    nodes = fpc.init_nodes(
        lambda *a, **k: model.apply(*a, train=True, **k),
        params,
        jnp.zeros((3, 28, 28, 1)),
        model_state={"batch_stats": variables["batch_stats"]},
    )
    shapes = sorted(leaf.shape for leaf in jax.tree_util.tree_leaves(nodes))
    # the stem, two blocks at 14x14 and two at 7x7
    assert shapes == [(3, 7, 7, 8)] * 2 + [(3, 14, 14, 4)] * 3


@pytest.mark.parametrize(
    "model, expected", [("mlp", "epoch"), ("cnn", "batch"), ("flax_cnn", "batch")]
)
def test_auto_loop(model, expected, monkeypatch):
    config = load_config("default")
    config.model = model
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert train.resolve_loop(config) == expected
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert train.resolve_loop(config) == "epoch"
    for loop in ("batch", "epoch"):
        config.loop = loop
        assert train.resolve_loop(config) == loop


def test_normal_node_init_draws_from_the_node_rng():
    config = load_config("test")
    config.value_init = "normal"
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=4)
    images = jnp.zeros((4, 28, 28, 1))
    targets = jax.nn.one_hot(jnp.arange(4), 10)
    step = jax.jit(lambda state, rng: state.train_step(images, targets, rng=rng))
    state, metrics = step(state, jax.random.key(1))
    assert np.isfinite(metrics["energy"]).all()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activations(activation):
    model = models.MLP(hidden_sizes=(4,), act=ACTIVATIONS[activation])
    params = model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)), train=False)["params"]
    output = model.apply({"params": params}, jnp.ones((2, 28, 28, 1)), train=False)
    assert jnp.asarray(output).shape == (2, 10)


@pytest.mark.parametrize("name", ["lm", "lm_bp"])
def test_lm_configs_validate_and_are_the_issues_workload(name):
    from examples.lm import train as lm_train

    config = load_config(name)
    lm_train.validate_config(config)
    model = (config.num_layers, config.width, config.num_heads, config.mlp_dim)
    assert model == (2, 64, 8, 256) and config.context_length == 128
    assert (config.batch_size, config.learning_rate, config.inference_steps) == (32, 1e-3, 8)
    pc = (config.latent, config.node_learning_rate, config.output_precision, config.value_init)
    assert pc == ("error", 0.5, 1e-4, "forward")
    assert config.algorithm == {"lm": "pc", "lm_bp": "bp"}[name]
