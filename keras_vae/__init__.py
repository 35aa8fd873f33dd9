"""keras_vae: variational autoencoders for Keras 3, with TensorFlow Probability distributions."""

import os

# TFP distributions need the TensorFlow backend; respect an explicit choice, then check it.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"keras_vae needs the TensorFlow Keras backend; KERAS_BACKEND={keras.backend.backend()!r}. "
        "Set KERAS_BACKEND=tensorflow."
    )

from keras_vae import bounds, callbacks, data, distributions, evaluation, export, networks, plots  # noqa: E402
from keras_vae.callbacks import ImageLogger, KLCyclical, KLWarmup  # noqa: E402
from keras_vae.distributions import (  # noqa: E402
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    GaussianPosterior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from keras_vae.models import VAE, conv_vae, mlp_vae  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogistic",
    "DiscretizedLogisticLikelihood",
    "GaussianLikelihood",
    "GaussianPosterior",
    "ImageLogger",
    "KLCyclical",
    "KLWarmup",
    "MixtureOfGaussiansPrior",
    "StandardNormalPrior",
    "VampPrior",
    "bounds",
    "callbacks",
    "conv_vae",
    "data",
    "distributions",
    "evaluation",
    "export",
    "mlp_vae",
    "networks",
    "plots",
]
