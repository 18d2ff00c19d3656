"""What the report calls each built-in probe, what to look for in it, and the order it is read in.

The run report shows probes in this order (the effect first, then its size and payoff, then the
mechanisms) and writes the title and sentence into each probe's result.json.
"""

from __future__ import annotations

# Reading order of the built-in probes (and the four planned ones): the effect first, then its
# size and payoff, then the mechanisms. Probes not listed (third-party ones) come after, by name.
# name -> (human name, one sentence: what to look for). A probe class may set ``title`` and
# ``look_for`` itself; those win.
GUIDE: dict[str, tuple[str, str]] = {
    "loss_curves": (
        "Loss curves",
        "A document's loss should jump up after it is trained, then fall again before it comes back "
        "(an inverted U each epoch); under a shuffled order it keeps rising until the revisit.",
    ),
    "recovery_score": (
        "Recovery score",
        "RS(n) = 0 means no recovery before the revisit, 1 that the forgetting is fully undone; "
        "anticipatory recovery shows as RS well above a shuffled run's, growing over epochs.",
    ),
    "online_loss": (
        "Online (prequential) loss",
        "From epoch 2 on, a cyclic order should have lower online loss than a shuffled one (paper "
        "Table 1): recovery pre-trains the document that comes next.",
    ),
    "forgetting": (
        "Forgetting",
        "In a cyclic run the anticipation ratio should sit well above 0: much of what a document forgets "
        "is undone before its next turn; a backward transfer below 0 is forgetting.",
    ),
    "recovery_map": (
        "Recovery map",
        "A document's loss should start falling some episodes before its turn, and earlier epoch by "
        "epoch: a lag above 0 that grows over epochs.",
    ),
    "gradient_similarity": (
        "Gradient similarity",
        "Gradients of documents near each other in the cycle should point the same way (positive "
        "cosines), with a pattern that follows the position in the cycle (Fig. 8a).",
    ),
    "pairwise_recovery": (
        "Pairwise recovery",
        "Training one document should help its neighbours in the cycle most: a bright band near the "
        "diagonal, roughly symmetric (Fig. 8b).",
    ),
    "weight_residual_similarity": (
        "Weight-residual similarity",
        "Evenly spaced bright stripes, one cycle apart, mean the weights come back to similar places "
        "every epoch (Fig. 8c).",
    ),
    "pca_weights": (
        "Weight trajectory (PCA helix)",
        "With the drift removed, the weights should turn once per epoch around a circle whose radius "
        "shrinks: a converging helix (Fig. 9); rotate the 3-D view to see it.",
    ),
    "activation_drift": (
        "Activation drift",
        "Blocks that grow more similar epoch by epoch mean a trained document's representation "
        "settles and resists the other documents' updates (Fig. 8d).",
    ),
    "model_clock": (
        "Model clock",
        "A collapse ratio below 1 means forgetting and recovery line up better against model time "
        "(the summed update norm) than against the episode count.",
    ),
    "order_decoding": (
        "Order decoding",
        "A rank correlation well above 0 and a pair-order accuracy above 0.5 mean the activations "
        "encode how recently each document was trained.",
    ),
    "toy_model": (
        "Toy model",
        "The toy's task-1 loss should show the same inverted U, growing over epochs, and its task "
        "solutions should lie on a ring in task order (Fig. 10, 11).",
    ),
}
READING_ORDER = list(GUIDE)


def reading_position(name: str) -> tuple[int, str]:
    """Sort key: built-ins in ``READING_ORDER``, anything else after them by name."""
    return (READING_ORDER.index(name) if name in READING_ORDER else len(READING_ORDER), name)


def human_name(name: str, cls=None) -> str:
    """The probe's title: its class's ``title`` if it sets one, else the guide's, else its name in words."""
    title = getattr(cls, "title", "") if cls is not None else ""
    if isinstance(title, str) and title:
        return title
    return GUIDE[name][0] if name in GUIDE else name.replace("_", " ").capitalize()


def look_for(name: str, cls=None) -> str:
    """One sentence, what to look for in the probe's figures: its class's ``look_for`` or the guide's."""
    text = getattr(cls, "look_for", "") if cls is not None else ""
    if isinstance(text, str) and text:
        return text
    return GUIDE[name][1] if name in GUIDE else ""
