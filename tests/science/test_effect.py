"""The phenomenon itself, at toy scale: a cyclic order recovers more than its shuffled twin."""

from arprobe.trainer.loop import run
from tests.conftest import tiny_config

# Losses only: recording is not what this test is about.
SMALL = dict(
    n_docs=6,
    context_length=32,
    steps_per_doc=8,
    epochs=3,
    vocab_size=1024,
    d_model=256,
    n_layers=4,
    n_heads=4,
    weights_every=0,
    activations_every=0,
    grads_at="never",
    checkpoints="none",
)


def test_cyclic_recovers_more_than_shuffled(tmp_path):
    # Measured over seeds 0, 1, 2 (with eager attention; sdpa moves the third decimal): final RS
    # cyclic 0.18/0.17/0.20 vs shuffled 0.06/0.08/0.00, and a lower online loss for cyclic in all
    # three. Seed 0 is checked here.
    cyclic = run(tiny_config(tmp_path, name="cyclic", order="cyclic", **SMALL), progress=False)
    shuffled = run(tiny_config(tmp_path, name="shuffle", order="shuffle", **SMALL), progress=False)
    assert cyclic.recovery_scores[-1] > shuffled.recovery_scores[-1] + 0.05
    assert cyclic.online_loss < shuffled.online_loss
