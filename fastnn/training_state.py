"""Where a training run stands, so that ``fit(initial_epoch=k)`` continues it bit for bit.

The weights and the optimizer buffers (Adam moments, momentum/RMS buffers, step count) are
saved as arrays by ``fastnn.io``; this small record, saved beside them in ``config.json``
under ``"training"``, holds the rest:

``epoch``       epochs finished (the ``initial_epoch`` to resume with)
``seed``        the seed of the shuffling and dropout/augmentation streams (``fit``'s ``seed``)
``shuffle``, ``batch_size``, ``n_train``
                what fixes the sequence of batches
``epochs``      the planned epochs (``fit``'s ``epochs``): the length of a schedule that has no
                horizon of its own (``optimizers.HorizonSchedule``)
``history``     ``{metric: [value of each finished epoch]}`` for ``loss``, ``accuracy`` and, when
                validating, ``val_loss``, ``val_accuracy`` (None: not finite, or unknown). With it
                ``EarlyStopping``, ``ModelCheckpoint(save_best_only=True)`` and
                ``ReduceLROnPlateau`` carry their best value and patience on into a resumed
                ``fit``. Optional: older files lack it.

Dropout and augmentation draw from a counter-based generator keyed on the optimizer step
(``backends.rng``), so restoring the step restores those streams. The shuffle order comes
from NumPy's generator seeded with ``seed``; ``shuffle_stream`` fast-forwards it past the
finished epochs' permutations, which gives exactly the permutations an uninterrupted run
draws (and keeps the streams of runs recorded before resuming existed).
"""

import math

import numpy as np

FIELDS = ("epoch", "seed", "shuffle", "batch_size", "n_train", "epochs")
OPTIONAL = ("history",)


def make_state(epoch, seed, shuffle, batch_size, n_train, epochs, history):
    """The JSON-ready record after ``epoch`` finished epochs; ``history`` maps each metric to
    ``epoch`` values (copied; non-finite ones become None)."""
    return {"epoch": int(epoch), "seed": int(seed), "shuffle": bool(shuffle), "batch_size": int(batch_size),
            "n_train": int(n_train), "epochs": int(epochs),
            "history": {k: [float(v) if v is not None and math.isfinite(v) else None for v in values]
                        for k, values in history.items()}}


def check_state(state):
    """``state`` as a record, or a ValueError saying which field is wrong (for damaged files)."""
    if not isinstance(state, dict) or not set(FIELDS) <= set(state) <= set(FIELDS + OPTIONAL):
        raise ValueError(f"the training record must have the fields {list(FIELDS)} (and optionally "
                         f"{list(OPTIONAL)}), got {repr(state)[:200]}")
    for name in FIELDS:
        value = state[name]
        kind = bool if name == "shuffle" else int
        if type(value) is not kind or (kind is int and value < (1 if name in ("batch_size", "n_train") else 0)):
            raise ValueError(f"training record field {name!r} must be a {'bool' if kind is bool else 'non-negative int'},"
                             f" got {value!r}")
    history = state.get("history", {})
    if not isinstance(history, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and len(v) == state["epoch"]
            and all(x is None or type(x) is float for x in v) for k, v in history.items()):
        raise ValueError(f"training record field 'history' must map metric names to lists of {state['epoch']} "
                         f"numbers or nulls, got {repr(history)[:200]}")
    return {**state, "history": {k: list(v) for k, v in history.items()}}


def past_history(state, initial_epoch, metrics):
    """``{metric: values of epochs 0 .. initial_epoch - 1}`` of the run recorded in ``state``
    (None where the record does not say), the start of a resumed fit's record."""
    recorded = (state or {}).get("history", {})
    return {k: (recorded.get(k, [])[:initial_epoch] + [None] * initial_epoch)[:initial_epoch] for k in metrics}


def past_values(state, key, epoch):
    """The recorded ``key`` values of epochs 0 .. epoch - 1 (what a monitoring callback replays
    when a fit resumes at ``epoch``); [] when ``state`` records none of them."""
    values = (state or {}).get("history", {}).get(key, [])[:epoch]
    return values if any(v is not None for v in values) else []


def shuffle_stream(seed, n_train, shuffle, initial_epoch):
    """(NumPy generator, dropout seed) as an uninterrupted run has them at the start of
    epoch ``initial_epoch`` (0-based): the generator has drawn the earlier epochs' permutations."""
    rng = np.random.default_rng(seed)
    dropout_seed = int(rng.integers(0, 2**31 - 1))
    if shuffle:
        for _ in range(initial_epoch):
            rng.permutation(n_train)
    return rng, dropout_seed


def resume_mismatches(state, initial_epoch, seed, shuffle, batch_size, n_train):
    """How resuming at ``initial_epoch`` with these settings differs from the saved run
    (empty when it continues that run exactly)."""
    if state is None or initial_epoch == 0:
        return []
    now = {"epoch": initial_epoch, "seed": seed, "shuffle": shuffle, "batch_size": batch_size, "n_train": n_train}
    names = {"epoch": "initial_epoch", "n_train": "training rows"}
    return [f"{names.get(k, k)}={now[k]!r} (the saved run: {state[k]!r})" for k in now if now[k] != state[k]]
