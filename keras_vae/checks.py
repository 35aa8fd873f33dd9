"""Validation rules shared by the library and the apps: one place, one wording.

Each `check_*` function returns the validated value or raises `ValueError` with one line
saying what was expected and what was received. Each `*_problem` function states a rule
about a combination of settings: it returns None when the combination is valid, else the
reason, so that the library raises it and the apps' flag validators print the same words.
"""

import math
import numbers


def is_int(value):
    """True for an integer (bools are not integers here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name, value):
    """`value` as an int >= 1 (bools are not integers here)."""
    if not (is_int(value) and value >= 1):
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_positive_ints(name, values):
    """`values` as a tuple of ints >= 1."""
    values = tuple(values)
    if not all(is_int(v) and v >= 1 for v in values):
        raise ValueError(f"`{name}` must be positive integers. Received: {name}={values!r}")
    return tuple(int(v) for v in values)


def check_int_at_least(name, value, minimum):
    """`value` as an int >= `minimum` (bools are not integers here)."""
    if not (is_int(value) and value >= minimum):
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_non_negative(name, value):
    """`value` as a float >= 0 (finite)."""
    if not (_is_real(value) and 0 <= value < math.inf):
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    return float(value)


def check_in_range(name, value, low, high):
    """`value` as a float in [low, high)."""
    if not (_is_real(value) and low <= value < high):
        raise ValueError(f"`{name}` must be a number in [{low}, {high}). Received: {name}={value!r}")
    return float(value)


def check_scale(name, value):
    """`value` as `"learned"` (a trained scale) or a positive finite float (a fixed one)."""
    if isinstance(value, str) and value == "learned":
        return value
    if not (_is_real(value) and 0 < value < math.inf):
        raise ValueError(f'`{name}` must be a positive number or "learned". Received: {name}={value!r}')
    return float(value)


def check_one_of(name, value, choices):
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def free_bits_problem(free_bits, objective, covariance, prior):
    """Free bits floor each latent dimension's KL to the standard normal prior, averaged over
    the batch: defined for the ELBO with a diagonal posterior and p(z) = N(0, I) only.
    `prior` is the prior's name (`"standard_normal"`, ...)."""
    if free_bits and (objective, covariance, prior) != ("elbo", "diagonal", "standard_normal"):
        return (f"free bits need the ELBO objective, a diagonal posterior and the standard normal prior; received "
                f"free_bits={free_bits!r}, objective={objective!r}, covariance={covariance!r}, prior={prior!r}")
    return None


def kl_schedule_problem(kl_warmup_epochs, kl_cycle_epochs):
    """Both schedules set the same KL weight: one at a time."""
    if kl_warmup_epochs and kl_cycle_epochs:
        return "choose one KL schedule: a warm-up or cycles, not both"
    return None


def iwae_samples_problem(objective, num_samples):
    """L_1 is the ELBO: the IWAE objective needs k > 1 samples to differ from it."""
    if objective == "iwae" and num_samples < 2:
        return f"the IWAE objective needs num_samples > 1; received num_samples={num_samples!r}"
    return None


def gradient_estimator_problem(gradient_estimator, free_bits):
    """STL and DReG differentiate the sampled log q(z|x) - log p(z) in place of the closed-form KL,
    which is what free bits floor: the two do not combine."""
    if free_bits and gradient_estimator != "reparameterized":
        return (f"free bits floor the closed-form KL, whose gradient gradient_estimator={gradient_estimator!r} "
                f"replaces; use gradient_estimator='reparameterized' with free_bits={free_bits!r}")
    return None


def raise_if(problem):
    """Raise `ValueError(problem)` unless `problem` is None."""
    if problem is not None:
        raise ValueError(problem[0].upper() + problem[1:])
