"""examples/lm on a tiny synthetic corpus: tokenisation, the split, training, resume, sampling.

Everything runs in-process on a text made here (a few repeated sentences
written to ``input.txt`` in a temporary folder) with a tiny model, but one
``slow`` test of the documented command in a subprocess.
"""

import hashlib
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import read_metrics, with_overrides

from examples.common.input_pipeline import DataError
from examples.common.workdir import ConfigError, UserError
from examples.lm import input_pipeline, sampling, text, train
from examples.lm.input_pipeline import Texts
from examples.lm.text import Vocabulary

ROOT = pathlib.Path(__file__).parents[1]
VOLATILE = ("seconds", "characters_per_second")  # wall-clock measurements
SENTENCES = (
    "ROMEO: But soft, what light through yonder window breaks?\n"
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?\n"
    "ROMEO: It is the east, and Juliet is the sun.\n"
)
#: A tiny model that trains an epoch in well under a second once compiled.
TINY = {
    "width": 16,
    "num_heads": 2,
    "mlp_dim": 32,
    "context_length": 16,
    "inference_steps": 4,
    "batch_size": 16,
    "eval_batch_size": 16,
    "num_epochs": 2,
    "sample_length": 60,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder with input.txt: the sentences, 30 times (4,620 characters)."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "input.txt").write_text(SENTENCES * 30)
    return folder


@pytest.fixture(scope="module")
def lm_config(corpus):
    """configs/lm.py, tiny, on the corpus, with overrides."""
    from configs import lm

    return lambda **overrides: with_overrides(
        lm.get_config(), {**TINY, "data_dir": str(corpus), **overrides}
    )


@pytest.fixture(scope="module")
def finished(lm_config, tmp_path_factory):
    """A whole 2-epoch run: (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("finished") / "workdir"
    state = train.train_and_evaluate(lm_config(), str(workdir))
    return workdir, state


def deterministic(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


# --- Text and ids ---------------------------------------------------------------


def test_encode_decode_round_trip():
    texts = input_pipeline.split_text(SENTENCES * 30)
    vocab = Vocabulary.build(*texts)
    assert vocab.chars == "".join(sorted(set(texts.train))) and not vocab.unknown
    ids = vocab.encode(SENTENCES)
    assert ids.dtype == np.int32 and ids.shape == (len(SENTENCES),)
    assert ids.min() >= 0 and ids.max() < vocab.size
    assert vocab.decode(ids) == SENTENCES
    assert vocab.decode(vocab.encode("")) == ""


def test_characters_outside_the_training_text_get_the_unknown_id():
    vocab = Vocabulary.build("abc", "abz", "a\u00e9")
    assert vocab.unknown and vocab.size == 4 and vocab.unknown_id == 3
    assert vocab.encode("zab\u00e9").tolist() == [3, 0, 1, 3]
    assert vocab.decode([3, 0]) == "\ufffda"
    assert vocab.count_unknown("abz\u00e9") == 2
    with pytest.raises(ValueError, match=r"^characters 'z' are not in the vocabulary\.$"):
        Vocabulary("abc").encode("abz")


def test_the_split_is_tfds_on_a_text_of_the_real_files_length():
    whole = (SENTENCES * 8000)[:1_115_394]
    assert len(whole) == 1_115_394
    texts = input_pipeline.split_text(whole)
    sizes = {split: len(getattr(texts, split)) for split in Texts._fields}
    assert sizes == input_pipeline.TFDS_SIZES
    assert texts.train + texts.validation + texts.test == whole


@pytest.mark.parametrize(
    "length, held_out",
    [(3, 1), (5, 1), (10, 1), (30, 2), (100, 5), (1001, 50), (1010, 51), (55_770 * 20, 55_770)],
)
def test_the_split_is_proportional_for_other_lengths(length, held_out):
    """5% each for validation and test (halves round up, at least 1), the start for training."""
    texts = input_pipeline.split_text("x" * length)
    assert (len(texts.validation), len(texts.test)) == (held_out, held_out)
    assert len(texts.train) == length - 2 * held_out


def test_too_short_a_text_is_a_data_error():
    with pytest.raises(DataError, match="needs at least 3"):
        input_pipeline.split_text("ab")


def test_the_text_is_checked_against_sha256sums(tmp_path):
    (tmp_path / "input.txt").write_text(SENTENCES)
    digest = hashlib.sha256(SENTENCES.encode()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  input.txt\n")
    assert input_pipeline.read_text(tmp_path) == SENTENCES
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  input.txt\n")
    with pytest.raises(DataError, match="does not match its SHA-256"):
        input_pipeline.read_text(tmp_path)
    with pytest.raises(DataError, match="has no input.txt"):
        input_pipeline.read_text(tmp_path / "absent")


def test_without_data_dir_or_tfds_the_error_says_what_to_do():
    """TFDS is hidden here (tests/conftest.py), as in an install without it."""
    with pytest.raises(DataError, match="needs tensorflow-datasets .*--config.data_dir"):
        input_pipeline.load_texts(None)


@pytest.mark.tensorflow
def test_tfds_gives_three_texts(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(input_pipeline, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=1):
        texts = input_pipeline.load_texts(None)
    assert all(isinstance(t, str) and t for t in texts)


def test_windows():
    ids = np.arange(10, dtype=np.int32)
    inputs, targets = text.training_windows(ids, 4)
    assert inputs.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert targets.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    inputs, targets, mask = text.evaluation_windows(ids, 4)
    assert inputs.shape == targets.shape == mask.shape == (3, 4)
    assert mask.sum() == 9  # every character but the first is predicted once
    assert targets[mask > 0].tolist() == list(range(1, 10))


# --- Training, resume, sample ------------------------------------------------


def test_a_few_steps_lower_the_perplexity(finished, lm_config):
    workdir, _ = finished
    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    config = lm_config()
    texts = input_pipeline.load_texts(config.data_dir)
    vocab = Vocabulary.build(*texts)
    untrained = train.create_train_state(config, vocab.size, train.split_keys(config.seed)[0])
    windows = text.evaluation_windows(vocab.encode(texts.test), config.context_length)
    nll, count = train.negative_log_likelihood(
        untrained.params, windows, apply_fn=train.create_model(config, vocab.size).apply,
        batch_size=config.eval_batch_size,
    )  # fmt: skip
    before = train.perplexity_metrics(nll, count, "test")["test_perplexity"]
    assert before > vocab.size  # untrained: no better than uniform
    # 16 weight steps per epoch: the perplexity falls at each, to half within two.
    assert records[0]["test_perplexity"] < before
    assert records[1]["test_perplexity"] < min(records[0]["test_perplexity"], before / 2)
    for r in records:
        np.testing.assert_allclose(r["test_bits_per_char"], np.log2(r["test_perplexity"]))
        assert len(r["energy_per_step"]) == TINY["inference_steps"] + 1
        assert r["characters_per_second"] > 0 and np.isfinite(r["train_energy"])
    assert (workdir / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_the_sample_has_the_requested_length_and_vocabulary_characters(finished, lm_config):
    workdir, _ = finished
    sample = (workdir / "sample.txt").read_text()
    config = lm_config()
    assert sample.startswith("ROMEO:")
    assert len(sample) == len("ROMEO:") + config.sample_length
    vocab = Vocabulary.build(*input_pipeline.load_texts(config.data_dir))
    assert set(sample) <= set(vocab.chars)


def test_the_unknown_id_is_never_drawn(lm_config):
    vocab = Vocabulary("ab", unknown=True)
    config = lm_config(context_length=4)
    state = train.create_train_state(config, vocab.size, jax.random.key(0))
    model = train.create_model(config, vocab.size)
    text = sampling.sample(
        model.apply, state.params, vocab, "ab", num_chars=20, temperature=5.0, context=4,
        key=jax.random.key(1),
    )  # fmt: skip
    assert len(text) == 22 and set(text) <= {"a", "b"}


def test_resume_is_exact(finished, lm_config, tmp_path):
    workdir, whole = finished
    train.train_and_evaluate(lm_config(num_epochs=1), str(tmp_path))
    resumed = train.train_and_evaluate(lm_config(), str(tmp_path))
    assert deterministic(read_metrics(tmp_path)) == deterministic(read_metrics(workdir))
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(whole.params)
    ):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "sample.txt").read_text() == (workdir / "sample.txt").read_text()


def test_backprop_trains_the_same_model(lm_config, tmp_path):
    from configs import lm_bp

    config = with_overrides(lm_bp.get_config(), {**TINY, "data_dir": lm_config().data_dir})
    train.train_and_evaluate(config, str(tmp_path))
    records = read_metrics(tmp_path)
    assert records[1]["test_perplexity"] < records[0]["test_perplexity"]
    assert records[0]["node_energies"] == {}


def test_the_output_precision_leaves_backprop_unchanged(lm_config, tmp_path):
    """The weight gradient comes out times the precision and Adam's input is divided back."""
    from configs import lm_bp

    records = []
    for precision in (1.0, 0.01):
        config = with_overrides(
            lm_bp.get_config(),
            {**TINY, "data_dir": lm_config().data_dir, "num_epochs": 1,
             "output_precision": precision},
        )  # fmt: skip
        train.train_and_evaluate(config, str(tmp_path / str(precision)))
        (record,) = read_metrics(tmp_path / str(precision))
        records.append(record)
    for key in ("train_loss_per_char", "test_perplexity", "validation_loss"):
        np.testing.assert_allclose(records[1][key], records[0][key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(records[1]["train_loss"], 0.01 * records[0]["train_loss"], rtol=1e-4)


BAD_FIELDS = [
    ("width", 0, "int > 0"),
    ("width", 15, "must be a multiple of config.num_heads = 2"),
    ("num_heads", -1, "int > 0"),
    ("context_length", 0, "int > 0"),
    ("node_learning_rate", 0.0, "number > 0"),
    ("output_precision", -1.0, "number > 0"),
    ("learning_rate", float("nan"), "number > 0"),
    ("sample_temperature", 0.0, "number > 0"),
    ("sample_length", -1, "int >= 0"),
    ("batch_size", 0, "int > 0"),
    ("num_epochs", 0, "int > 0"),
    ("seed", -1, "int >= 0"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_bad_field(field, value, message, lm_config, tmp_path):
    config = lm_config(**{field: value})
    with pytest.raises(ConfigError, match=message) as error:
        train.train_and_evaluate(config, str(tmp_path / "new"))
    assert str(error.value).startswith(f"config.{field}") and "\n" not in str(error.value)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (
            {"batch_size": 4096},
            ConfigError,
            r"larger than the training set \(\d+ windows of 16 characters\)\.$",
        ),
        ({"sample_prompt": "ROMEO\u00e9"}, ConfigError, "outside the training text's vocabulary"),
        ({"algorithm": "ep"}, ConfigError, "algorithm must be one of"),
        ({"value_init": "ones"}, ConfigError, "value_init must be one of"),
        ({"latent": "errors"}, ConfigError, "latent must be 'value' .* or 'error'"),
        (
            {"nudging": 0.5, "output_precision": 0.1},
            ConfigError,
            r"^config.nudging = 0.5 nudges the output's probabilities, which the weighted",
        ),
        ({"data_dir": "/nonexistent"}, DataError, "has no input.txt"),
        ({"context_length": 100_000}, ConfigError, "leaves no window in the training text"),
    ],
)
def test_bad_input_is_one_line(overrides, error, message, lm_config, tmp_path):
    with pytest.raises(error, match=message) as raised:
        train.train_and_evaluate(lm_config(**overrides), str(tmp_path / "new"))
    assert isinstance(raised.value, UserError) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_documented_command_runs(corpus, tmp_path):
    flags = [f"--config.{k}={v}" for k, v in {**TINY, "num_epochs": 1}.items()]
    result = subprocess.run(
        [sys.executable, "examples/lm/main.py", "--config=configs/lm.py",
         f"--workdir={tmp_path / 'run'}", f"--config.data_dir={corpus}", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Final test perplexity: " in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "run" / "sample.txt").is_file()
