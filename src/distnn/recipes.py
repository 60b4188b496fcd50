"""Defaults that learn: the training recipe is chosen by the data when the user gives none.

The original's recipe (full batch, SGD with lr 1.0) suits its spiral data and nothing
else: on images or a user's own file it leaves the loss at ln K, chance. So the fields a
user, a preset or a config file did not set come from one of two recipes:

- ``original``: the spiral data with a full batch, exactly as the original C++ program;
- ``minibatch``: everything else (files, image sets, or a mini-batch on the spiral):
  batches of 128 rows (32 below ``SMALL_DATA_ROWS`` rows), SGD with lr 0.05, decay 5e-4
  and momentum 0.9, inputs of data files standardised, and enough epochs for
  ``MIN_STEPS`` updates.

The fields a recipe filled are listed in ``TrainConfig.auto`` until ``fit_to_data`` knows
the number of training rows; from then on the config holds plain values, so that
``config.json`` and a resumed run see exactly what was trained.
"""

import math

RECIPES: dict[str, dict] = {
    "original": dict(epochs=1000, batch_size=None, lr=1.0, lr_decay=1e-3, momentum=0.9,
                     eval_every=100, standardize=False),
    "minibatch": dict(epochs=20, batch_size=128, lr=0.05, lr_decay=5e-4, momentum=0.9,
                      eval_every=1, standardize=True),
}
# What Adam and AdamW take instead of the recipe's SGD values: their usual learning rate
# (SGD's 0.05 or 1.0 diverges with Adam), no decay (users of every framework expect a
# constant rate unless they choose a schedule), and AdamW's usual decoupled weight decay.
OPTIMIZER_DEFAULTS: dict[str, dict] = {
    "sgd": {},
    "adam": dict(lr=1e-3, schedule="constant"),
    "adamw": dict(lr=1e-3, schedule="constant", weight_decay=0.01),
}
# Pixels already scaled to [0, 1]: standardising them measured no better (Fashion-MNIST,
# fmnist preset: test accuracy 0.8958 standardised, 0.8959 not), so it is left off there.
IMAGE_SETS = ("fashion-mnist", "mnist")
SMALL_DATA_ROWS = 8192     # fewer training rows than this: batches of SMALL_BATCH
SMALL_BATCH = 32
MIN_STEPS = 3000           # auto epochs give at least this many updates...
MIN_EPOCHS = 20
MAX_AUTO_EPOCHS = 1000     # ...within this many epochs
EVALUATIONS = 20           # auto --eval-every: about this many evaluations per run


def choose(values: dict) -> str:
    """The recipe for these explicitly set values: ``original`` for the spiral at full
    batch, ``minibatch`` otherwise."""
    if values.get("recipe") in RECIPES:
        return values["recipe"]
    spiral = values.get("dataset", "spiral") == "spiral"
    return "original" if spiral and values.get("batch_size") is None else "minibatch"


def fill(values: dict) -> dict:
    """``values`` completed by its recipe: adds ``recipe`` and ``auto`` (the names filled)."""
    name = choose(values)
    recipe = {**RECIPES[name], **OPTIMIZER_DEFAULTS.get(values.get("optimizer", "sgd"), {})}
    if values.get("dataset", "spiral") in IMAGE_SETS:
        recipe["standardize"] = False
    filled = {key: value for key, value in recipe.items() if key not in values}
    return {**values, **filled, "recipe": name, "auto": tuple(sorted(filled))}


def fit_to_data(config, n_train: int):
    """The config with its recipe's batch size, epochs and evaluation interval fitted to
    ``n_train`` training rows (fields the user set stay as they are)."""
    auto = set(config.auto)
    if config.recipe != "minibatch" or not auto:
        return config.replace(auto=())
    changes = {}
    if "batch_size" in auto:
        changes["batch_size"] = RECIPES["minibatch"]["batch_size"] if n_train >= SMALL_DATA_ROWS \
            else SMALL_BATCH
    batch = changes.get("batch_size", config.batch_size) or n_train
    if "epochs" in auto:
        steps_per_epoch = math.ceil(n_train / min(batch, n_train))
        changes["epochs"] = min(MAX_AUTO_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
    if "eval_every" in auto:
        changes["eval_every"] = max(1, changes.get("epochs", config.epochs) // EVALUATIONS)
    return config.replace(**changes, auto=())


def describe(config) -> str:
    """One line saying which recipe filled which values, for the start of a run."""
    batch = "full batch" if config.batch_size is None else f"batch {config.batch_size}"
    standardized = ", inputs standardised" if config.standardize else ""
    origin = ("the original's, for the spiral at full batch" if config.recipe == "original"
              else "mini-batch, for data from files and images")
    return (f"recipe: {origin}: {batch}, {describe_optimizer(config)}, "
            f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}{standardized}; "
            "any flag overrides it")


def describe_optimizer(config) -> str:
    """'SGD lr 0.05 (decay 0.0005, momentum 0.9)' or 'AdamW lr 0.001 (cosine, ...)'."""
    name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[config.optimizer]
    details = []
    if config.schedule == "inverse-decay":
        details.append(f"decay {config.lr_decay:g}")
    else:
        details.append(f"{config.schedule} schedule")
    if config.warmup_epochs:
        details.append(f"{config.warmup_epochs:g} warm-up epochs")
    if config.optimizer == "sgd":
        details.append(f"{'Nesterov ' if config.nesterov else ''}momentum {config.momentum:g}")
    if config.weight_decay:
        details.append(f"weight decay {config.weight_decay:g}")
    return f"{name} lr {config.lr:g} ({', '.join(details)})"
