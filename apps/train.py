"""Train a VAE with model.fit, save it, and export a SavedModel for TF Serving.

    python -m apps.train --dataset=digits --model_dir=runs/digits
    python -m apps.train --flagfile=apps/configs/burda_vae_k1.cfg

Writes `<model_dir>/model.keras` (every epoch and at the end), TensorBoard logs in
`<model_dir>/logs` (scalars, and sample and reconstruction images), `<model_dir>/history.csv`
(each epoch's wall time in its `seconds` column), `<model_dir>/flags.cfg` (a flagfile that
reproduces the run), the pictures and `collapse.json` of `keras_vae.plots.write_pictures`
(as `apps.sample` does), and a SavedModel in `<export_dir>/<model_name>/<version>/`
(through `apps.export`), every file atomically (`keras_vae.runs`). A run is a sequence of
steps, trained (the final model.keras), exported, pictures, recorded in
`<model_dir>/run.json`: started again with the same flags after a crash at any instant, it
resumes training from `<model_dir>/backup` or does only the steps that are missing.
"""

import functools
import itertools
import os
import shutil
import sys
import uuid

from absl import flags

from apps import common
from apps import export as export_app

keras = common.LazyModule("keras")
tf = common.LazyModule("tensorflow")
keras_vae = common.LazyModule("keras_vae")
callbacks, checks, data, plots, priors, runs = (
    common.LazyModule(f"keras_vae.{name}") for name in ("callbacks", "checks", "data", "plots", "priors", "runs"))

flags.adopt_module_key_flags(common)
flags.adopt_module_key_flags(export_app)  # --export_dir, --model_name, --version, --score_samples

_LATENT_DIM = flags.DEFINE_list(
    "latent_dim", ["8"], "Size of z; several comma-separated sizes stack stochastic layers, z_1 (next to x) first: "
    "100,50 with --hidden_units=100,100 --link_units=50,50 --activation=tanh is Burda et al.'s two-layer model "
    "(keras_vae.hierarchical_vae; --architecture=mlp, --prior=standard_normal, --covariance=diagonal).")
_ARCHITECTURE = flags.DEFINE_enum("architecture", "mlp", ["mlp", "conv"],
                                  "mlp: Dense layers on flattened x; conv: stride-2 convolutions on images "
                                  "(H, W, C), then --hidden_units Dense layers.")
_HIDDEN_UNITS = flags.DEFINE_list("hidden_units", ["128", "128"], "Encoder widths; the decoder mirrors them.")
_LINK_UNITS = flags.DEFINE_list(
    "link_units", None, "With several --latent_dim sizes: widths of the networks between stochastic layers, "
    "q(z_l+1|z_l) and, reversed, p(z_l|z_l+1), the same for every pair of layers (default: --hidden_units).")
_INIT_OUTPUT_BIAS = flags.DEFINE_boolean(
    "init_output_bias", True, "Start the decoder's output bias at the training data's per-value mean (Bernoulli: "
    "its logit; keras_vae.init_output_bias), so the decoder need not first learn the marginal; MLP decoders.")
_FILTERS = flags.DEFINE_list("filters", ["32", "64"], "--architecture=conv: filters of the encoder's stride-2 "
                             "convolutions (H and W must divide by 2^len); the decoder mirrors them.")
_ACTIVATION = flags.DEFINE_enum("activation", "relu", ["relu", "tanh", "elu", "gelu", "softplus"],
                                "Hidden-layer activation.")
# The choices of --likelihood, --prior and --lr_schedule are keras_vae's names, spelled out (apps.common).
_LIKELIHOOD = flags.DEFINE_enum("likelihood", "bernoulli", ["bernoulli", "continuous_bernoulli", "discretized_logistic", "gaussian"],
                                "p(x|z): bernoulli, continuous_bernoulli (data in [0, 1]), gaussian, "
                                "discretized_logistic (8-bit images as k/255).")
_PRIOR = flags.DEFINE_enum("prior", "standard_normal", ["mixture", "standard_normal", "vamp"],
                           "p(z): standard_normal; mixture (learned Gaussian mixture, --prior_components); "
                           "vamp (VampPrior, --pseudo_inputs).")
_PRIOR_COMPONENTS = flags.DEFINE_integer("prior_components", 10, "Components of --prior=mixture.", lower_bound=1)
_PSEUDO_INPUTS = flags.DEFINE_integer("pseudo_inputs", 50, "Pseudo-inputs of --prior=vamp.", lower_bound=1)
_LIKELIHOOD_SCALE = flags.DEFINE_string("likelihood_scale", None,
                                        'Scale of a gaussian or discretized_logistic likelihood: a positive number '
                                        'or "learned" (default: 1.0 for gaussian, learned for discretized_logistic).')
_COVARIANCE = flags.DEFINE_enum("covariance", "diagonal", ["diagonal", "full"], "q(z|x) covariance.")
_SCALE_ACTIVATION = flags.DEFINE_enum(
    "scale_activation", "softplus", ["exp", "softplus"], "What makes the latent Gaussians' raw scales positive: "
    "softplus, or exp (log scale affine in the network's output, as in Burda et al.'s code).")
_OBJECTIVE = flags.DEFINE_enum("objective", "elbo", ["elbo", "iwae"], "Training bound: ELBO or IWAE L_k.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "z samples per example (k).", lower_bound=1)
# The choices are keras_vae.bounds.GRADIENT_ESTIMATORS, spelled out (apps.common).
_GRADIENT_ESTIMATOR = flags.DEFINE_enum(
    "gradient_estimator", "reparameterized", ["reparameterized", "stl", "dreg"],
    "Gradient of the training bound: reparameterized; stl (sticking the landing: no score term; unbiased for the "
    "ELBO, biased for IWAE); dreg (doubly reparameterized, unbiased for IWAE; stl for the ELBO).")
_BETA = flags.DEFINE_float("beta", 1.0, "Weight on the KL term (beta-VAE).", lower_bound=0.0)
_CONDITIONAL = flags.DEFINE_boolean("conditional", False, "Conditional VAE: q(z|x, y) and p(x|z, y) with the "
                                    "dataset's class labels y.")
_FREE_BITS = flags.DEFINE_float("free_bits", 0.0, "Per-dimension KL floor in nats (0: off), against posterior "
                                 "collapse; ELBO objective, diagonal posterior.", lower_bound=0.0)
_KL_CYCLE_EPOCHS = flags.DEFINE_integer("kl_cycle_epochs", 0, "Cyclical KL annealing: cycle length in epochs, the "
                                        "weight ramping 0 -> beta over each cycle's first half (0: none).",
                                        lower_bound=0)
_KL_WARMUP_EPOCHS = flags.DEFINE_integer("kl_warmup_epochs", 0, "Epochs of linear KL warm-up (0: none).",
                                         lower_bound=0)
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per batch.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (initial, with a schedule).")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "constant", ["constant", "burda", "burda_equal"],
                                 "constant; burda: Burda et al.'s 8 stages (x10^(-1/7) each, stage i "
                                 "3^i/3280 of --epochs); burda_equal: the same 8 rates, equal stages.")
_MIXED_PRECISION = flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                                     "Keras dtype policy.")
_JIT_COMPILE = flags.DEFINE_enum("jit_compile", None, ["auto", "true", "false"],
                                 "compile's jit_compile, with Keras' meaning (auto: XLA only with an "
                                 "accelerator). Default: the VAE's choice, XLA for dense networks.")
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution", None, "Train steps per compiled call (default 100, 1 "
    "under --strategy).", lower_bound=1)
_IMAGE_EVERY = flags.DEFINE_integer("image_every", 5, "Write sample and reconstruction images to TensorBoard "
                                    "every N epochs (0: never).", lower_bound=0)
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                              "tf.distribute strategy: default (one device); mirrored (all local GPUs); "
                              "multi_worker (the cluster in TF_CONFIG). --batch_size is per replica.")
_DETERMINISTIC = flags.DEFINE_boolean("deterministic", False,
                                      "Enable TensorFlow op determinism: bit-identical reruns, some speed lost.")
_INIT_FROM = flags.DEFINE_string("init_from", None, "A --model_dir of a finished apps.train run whose trained "
                                 "weights start this one (same architecture flags; the objective, beta, schedules "
                                 "and optimizer are this run's own), e.g. a VAE continued with --objective=iwae.")


@flags.validator("learning_rate", "must be positive")
def _positive(value):
    return value > 0


@flags.validator("hidden_units", "must be a comma-separated list of positive integers, e.g. 200,200")
def _units(value):
    return all(u.isdigit() and int(u) > 0 for u in value)


@flags.validator("filters", "must be a comma-separated list of positive integers, e.g. 32,64")
def _filters(value):
    return bool(value) and _units(value)


@flags.validator("latent_dim", "must be a comma-separated list of positive integers, one per stochastic layer, "
                 "e.g. 50 or 100,50")
def _latent_dims(value):
    return bool(value) and _units(value)


@flags.validator("link_units", "must be a comma-separated list of positive integers, e.g. 50,50")
def _link_units(value):
    return value is None or _units(value)


@flags.multi_flags_validator(["latent_dim", "link_units", "architecture", "prior", "covariance", "free_bits"])
def _stacked_layers(values):
    """Several stochastic layers: keras_vae.hierarchical_vae (MLPs, its own prior, diagonal Gaussians)."""
    if len(values["latent_dim"]) == 1:
        if values["link_units"] is not None:
            raise flags.ValidationError("--link_units needs several stochastic layers, e.g. --latent_dim=100,50")
        return True
    wanted = {"architecture": "mlp", "prior": "standard_normal", "covariance": "diagonal"}
    wrong = [f"--{name}={values[name]}" for name, value in wanted.items() if values[name] != value]
    if wrong:
        raise flags.ValidationError(
            f"several stochastic layers (--latent_dim={','.join(values['latent_dim'])}) are built with "
            f"--architecture=mlp, --prior=standard_normal (p(z_n) = N(0, I), the layers below conditional) and "
            f"--covariance=diagonal; received {', '.join(wrong)}")
    if values["free_bits"]:
        raise flags.ValidationError(f"--free_bits floors each dimension's KL to N(0, 1), which is z_n's prior only; "
                                    f"several stochastic layers (--latent_dim={','.join(values['latent_dim'])}) take "
                                    f"none. Received --free_bits={values['free_bits']}")
    return True


def _passes(problem):
    """True if the library's rule found no `problem`; else the flag validator fails with the library's words."""
    if problem is not None:
        raise flags.ValidationError(problem)
    return True


@flags.multi_flags_validator(["kl_warmup_epochs", "kl_cycle_epochs"])
def _one_kl_schedule(values):
    return _passes(checks.kl_schedule_problem(values["kl_warmup_epochs"], values["kl_cycle_epochs"]))


@flags.multi_flags_validator(["free_bits", "objective", "covariance", "prior"])
def _free_bits(values):
    return _passes(checks.free_bits_problem(values["free_bits"], values["objective"], values["covariance"],
                                            values["prior"]))


@flags.multi_flags_validator(["gradient_estimator", "free_bits"])
def _gradient_estimator(values):
    return _passes(checks.gradient_estimator_problem(values["gradient_estimator"], values["free_bits"]))


@flags.multi_flags_validator(["conditional", "prior"], "--prior=vamp cannot be --conditional: its pseudo-inputs "
                             "have no labels")
def _conditional_prior(values):
    return not (values["conditional"] and values["prior"] == "vamp")


@flags.multi_flags_validator(["likelihood", "binarize"],
                             "--likelihood=continuous_bernoulli or discretized_logistic models intensities: "
                             "use --binarize=none (or auto, which means none for them)")
def _intensity_likelihood(values):
    return (values["likelihood"] not in ("continuous_bernoulli", "discretized_logistic")
            or values["binarize"] in ("none", "auto"))


@flags.validator("likelihood_scale", 'must be a positive number or "learned"')
def _scale(value):
    return value is None or value == "learned" or _is_positive_float(value)


@flags.multi_flags_validator(["objective", "num_samples"])
def _iwae_samples(values):
    return _passes(checks.iwae_samples_problem(values["objective"], values["num_samples"]))


def _is_positive_float(text):
    try:
        return float(text) > 0
    except ValueError:
        return False


def make_strategy(name):
    """The `tf.distribute` strategy the --strategy flag names."""
    if name == "mirrored":  # all local GPUs, else the CPU
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":  # the cluster and this task come from TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _worker_dir(strategy, model_dir):
    """(folder this process writes to, whether it is the chief): other workers write to scratch."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return model_dir, True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (not has_chief and (resolver.task_type, resolver.task_id) == ("worker", 0)):
        return model_dir, True
    return os.path.join(model_dir, f"{resolver.task_type}_{resolver.task_id}"), False


def _prior(input_shape):
    """The prior layer the --prior flags describe."""
    options = {"mixture": {"num_components": _PRIOR_COMPONENTS.value}, "vamp": {"num_pseudo_inputs": _PSEUDO_INPUTS.value}}
    return priors.make_prior(_PRIOR.value, int(_LATENT_DIM.value[0]), input_shape, **options.get(_PRIOR.value, {}))


def init_from(model, model_dir):
    """Copy the trainable weights of `<model_dir>/model.keras` into `model`, which must have the same shapes.

    Only the networks' (and learned prior's and likelihood's) weights move: the KL weight, the noise
    seed and the optimizer's state stay this run's own."""
    trained = common.load_model(model_dir, flag="init_from")
    theirs, mine = trained.trainable_weights, model.trainable_weights
    for i, pair in enumerate(itertools.zip_longest(theirs, mine)):
        shapes = [None if w is None else tuple(w.shape) for w in pair]
        if shapes[0] != shapes[1]:
            raise ValueError(f"--init_from={model_dir}: its trainable weight {i} has shape {shapes[0]} where these "
                             f"flags build {shapes[1]}; use the architecture flags of its flags.cfg")
    for target, source in zip(mine, theirs):
        target.assign(source)


def _architecture(input_shape):
    """The builder the model flags name, with its architecture's arguments bound."""
    latent_dims = [int(d) for d in _LATENT_DIM.value]
    hidden_units = [int(u) for u in _HIDDEN_UNITS.value]
    if len(latent_dims) > 1:
        links = [int(u) for u in _LINK_UNITS.value] if _LINK_UNITS.value is not None else hidden_units
        return functools.partial(keras_vae.hierarchical_vae, input_shape, latent_dims,
                                 hidden_units=[hidden_units] + [links] * (len(latent_dims) - 1))
    flat = dict(hidden_units=hidden_units, covariance=_COVARIANCE.value, prior=_prior(input_shape))
    if _ARCHITECTURE.value == "conv":
        return functools.partial(keras_vae.conv_vae, input_shape, latent_dims[0],
                                 filters=[int(f) for f in _FILTERS.value], **flat)
    return functools.partial(keras_vae.mlp_vae, input_shape, latent_dims[0], **flat)


def main(argv):
    del argv  # common.run rejects positional arguments
    common.quiet_logs()
    with common.one_line_errors("train"):
        # Resolves --binarize=auto (dynamic for the Bernoulli likelihood), so flags.cfg records the value used.
        splits = common.load_splits(bernoulli=_LIKELIHOOD.value == "bernoulli")
        if _CONDITIONAL.value and splits.num_classes is None:
            raise ValueError(f"--conditional needs class labels, and {common.missing_labels()}")
        num_classes = splits.num_classes if _CONDITIONAL.value else None
        if _DETERMINISTIC.value:
            tf.config.experimental.enable_op_determinism()
        keras.config.set_dtype_policy(_MIXED_PRECISION.value)
        keras.utils.set_random_seed(common.SEED.value)
        strategy = make_strategy(_STRATEGY.value)
        model_dir, is_chief = _worker_dir(strategy, common.MODEL_DIR.value)
        scale = _LIKELIHOOD_SCALE.value
        with strategy.scope():
            model = _architecture(splits.input_shape)(
                likelihood=_LIKELIHOOD.value, activation=_ACTIVATION.value, scale_activation=_SCALE_ACTIVATION.value,
                likelihood_scale=scale if scale in (None, "learned") else float(scale), beta=_BETA.value,
                num_samples=_NUM_SAMPLES.value, objective=_OBJECTIVE.value, seed=common.SEED.value,
                free_bits=_FREE_BITS.value, num_classes=num_classes, gradient_estimator=_GRADIENT_ESTIMATOR.value,
            )
            model.compile(
                optimizer=keras.optimizers.Adam(_LEARNING_RATE.value),
                jit_compile={"true": True, "false": False}.get(_JIT_COMPILE.value, _JIT_COMPILE.value),
                steps_per_execution=_STEPS_PER_EXECUTION.value,
            )
            model.check_data(splits.train, splits.train_labels if num_classes else None)
            if _INIT_FROM.value:
                init_from(model, _INIT_FROM.value)
            elif _INIT_OUTPUT_BIAS.value:
                keras_vae.init_output_bias(model, splits.train)
        state = _preflight(model_dir)
        common.write_flagfile(os.path.join(model_dir, "flags.cfg"), sys.modules[__name__])

    if not state.get("trained"):
        _train(model, splits, strategy, model_dir, num_classes)
        with common.one_line_errors("train"):
            model_path = os.path.join(model_dir, "model.keras")
            runs.save_model(model, model_path, kill_name="final_save")
            state.update(trained=True, model_sha256=runs.sha256(model_path), kill_name="state_trained")
            runs.kill_point("backup_cleanup")
            shutil.rmtree(os.path.join(model_dir, "backup"), ignore_errors=True)
        print(f"Saved {model_path}")
    else:
        model = _finished_model(model_dir, state)
        shutil.rmtree(os.path.join(model_dir, "backup"), ignore_errors=True)  # if a kill kept it
        print(f"Training in {model_dir} had finished; completing the run's missing steps")

    with common.one_line_errors("train"):
        _finish(model, splits, model_dir, state, is_chief)


def _preflight(model_dir):
    """Check the run's folders before any training; return the run's state.

    `--model_dir` must be a folder (made if missing) this process can write, and not a
    finished run; `--export_dir`, when exporting, too. A run started before (with a
    `run.json`) is resumed by the same command."""
    for flag, folder in (("model_dir", model_dir), ("export_dir", export_app.EXPORT_DIR.value)):
        if folder:
            _check_writable_folder(flag, folder)
    os.makedirs(model_dir, exist_ok=True)
    state = runs.RunState(model_dir)
    legacy = os.path.exists(os.path.join(model_dir, "model.keras")) and not os.path.isdir(
        os.path.join(model_dir, "backup"))
    if (not os.path.exists(state.path) and legacy) or _complete(state):
        raise FileExistsError(f"--model_dir={model_dir} holds a finished run; choose a new --model_dir")
    if not state.get("run_id"):
        state.update(run_id=uuid.uuid4().hex)
    runs.remove_stale_temporaries(model_dir)
    return state


def _check_writable_folder(flag, folder):
    """A folder that exists and is writable, or can be made in the nearest existing parent;
    made by the step that writes into it."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"--{flag}={folder}: {existing} is a file; it must name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--{flag}={folder}: {existing} is not writable")


def _complete(state):
    return bool(state.get("trained") and state.get("pictures")
                and (state.get("exported") or not export_app.EXPORT_DIR.value))


def _train(model, splits, strategy, model_dir, num_classes):
    """`fit` from the run's newest good backup (or from scratch), as the flags say."""
    # --batch_size is per replica; the datasets carry global batches, which fit splits.
    batch, seed = _BATCH_SIZE.value * strategy.num_replicas_in_sync, common.SEED.value
    train_labels, validation_labels = (splits.train_labels, splits.validation_labels) if num_classes else (None, None)
    train = data.make_dataset(splits.train, batch, shuffle=True, binarize=splits.dynamic, seed=seed,
                              labels=train_labels)
    validation = (data.make_dataset(splits.validation, batch, labels=validation_labels)
                  if len(splits.validation) else None)
    # Samples and reconstructions in TensorBoard every --image_every epochs.
    images = [callbacks.ImageLogger(os.path.join(model_dir, "logs"), splits.test, every=_IMAGE_EVERY.value)
              ] if _IMAGE_EVERY.value and not num_classes else []
    backup = runs.RunBackup(os.path.join(model_dir, "backup"), report=lambda line: print(f"train: {line}",
                                                                                          file=sys.stderr))
    with common.one_line_errors("train"), strategy.scope():
        start = backup.restore(model)
    if start >= _EPOCHS.value:
        print(f"Resuming {model_dir}: all {_EPOCHS.value} epochs had finished before the run stopped; saving the "
              "model from its backup")
    elif start:
        print(f"Resuming {model_dir} at epoch {start + 1}/{_EPOCHS.value} from its backup")
    try:
        model.fit(
            train,
            validation_data=validation,
            epochs=_EPOCHS.value,
            initial_epoch=start,
            shuffle=False,  # the dataset shuffles itself, with the run's seed
            callbacks=callbacks.training_callbacks(
                model_dir, epochs=_EPOCHS.value, learning_rate=_LEARNING_RATE.value,
                lr_schedule=_LR_SCHEDULE.value, kl_warmup_epochs=_KL_WARMUP_EPOCHS.value,
                kl_cycle_epochs=_KL_CYCLE_EPOCHS.value, backup=backup) + images,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except runs.TrainingInterrupted as interrupted:
        print(f"train: {interrupted}; run the same command to resume", file=sys.stderr)
        sys.exit(128 + interrupted.signum)
    except callbacks.NonFiniteLossError as error:
        kept = ("the last good epoch is kept in " + os.path.join(model_dir, "backup")
                if backup.generations() else "no epoch had finished")
        sys.exit(f"train: error: {error}; {kept}; nothing exported. Try a lower --learning_rate.")


def _finished_model(model_dir, state):
    """The run's final model.keras, checked against the SHA-256 recorded when it was saved."""
    model_path = os.path.join(model_dir, "model.keras")
    with common.one_line_errors("train"):
        if not os.path.isfile(model_path) or runs.sha256(model_path) != state.get("model_sha256"):
            raise ValueError(f"{model_path} is missing or is not the model this run saved (its SHA-256 differs); "
                             "choose a new --model_dir")
        return common.load_model(model_dir)


def _finish(model, splits, model_dir, state, is_chief):
    """The steps after training that are not done yet: the SavedModel, then the pictures.

    Conditional models finish alike: their signatures take labels y, and
    the pictures encode each test example with its own class (`splits.test_labels`)."""
    if export_app.EXPORT_DIR.value and is_chief and not state.get("exported"):
        path = _exported_by(state.get("run_id")) or export_app.export(model, model_dir, run_id=state.get("run_id"))
        state.update(exported=path, kill_name="state_exported")
        print(f"Exported SavedModel to {path}")
    if not state.get("pictures"):
        _, report = plots.write_pictures(model, splits.test, model_dir, labels=splits.test_labels,
                                         history_rows=common.history_rows(model_dir), seed=common.SEED.value)
        state.update(pictures=True)
        print(f"Wrote the pictures and collapse.json in {model_dir}: {report['summary']}")


def _exported_by(run_id):
    """A version under --export_dir that this run exported before a crash kept it from noting so, if any."""
    base = os.path.join(export_app.EXPORT_DIR.value, export_app.model_name(common.MODEL_DIR.value))
    for version in keras_vae.export.versions(base):
        info = runs.read_json(os.path.join(base, str(version), keras_vae.export.METADATA_FILE))
        if info and info.get("run_id") == run_id:
            return os.path.join(base, str(version))
    return None


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    common.run(main, "train", groups=[
        common.RUN_GROUP, common.DATA_GROUP,
        ("model", ("architecture", "latent_dim", "hidden_units", "link_units", "filters", "activation", "covariance",
                   "scale_activation", "likelihood", "likelihood_scale", "init_output_bias", "prior",
                   "prior_components", "pseudo_inputs", "conditional")),
        ("objective", ("objective", "num_samples", "gradient_estimator", "beta", "free_bits", "kl_warmup_epochs",
                       "kl_cycle_epochs")),
        ("training", ("epochs", "batch_size", "learning_rate", "lr_schedule", "init_from", "mixed_precision",
                      "jit_compile", "steps_per_execution", "strategy", "deterministic")),
        ("output", ("image_every", "export_dir", "model_name", "version", "score_samples")),
    ])
