"""keras_vae: variational autoencoders for Keras 3, with TensorFlow Probability distributions."""

import keras

# TFP distributions need the TensorFlow backend (Keras' default); a different choice fails here.

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"keras_vae needs the TensorFlow Keras backend; KERAS_BACKEND={keras.backend.backend()!r}. "
        "Set KERAS_BACKEND=tensorflow."
    )

from keras_vae import (  # noqa: E402
    bounds,
    builders,
    callbacks,
    checks,
    data,
    diagnostics,
    evaluation,
    execution,
    export,
    hierarchical,
    likelihoods,
    networks,
    plots,
    posteriors,
    priors,
)
from keras_vae.callbacks import EpochSeconds, ImageLogger, KLCyclical, KLWarmup  # noqa: E402
from keras_vae.likelihoods import (  # noqa: E402
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
)
from keras_vae.posteriors import GaussianPosterior  # noqa: E402
from keras_vae.priors import MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior  # noqa: E402
from keras_vae.builders import conv_vae, init_output_bias, mlp_vae  # noqa: E402
from keras_vae.models import VAE  # noqa: E402
from keras_vae.hierarchical import (  # noqa: E402
    HierarchicalPosterior,
    HierarchicalPrior,
    LatentBlock,
    LatentChain,
    hierarchical_vae,
)

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogistic",
    "DiscretizedLogisticLikelihood",
    "EpochSeconds",
    "GaussianLikelihood",
    "GaussianPosterior",
    "HierarchicalPosterior",
    "HierarchicalPrior",
    "ImageLogger",
    "KLCyclical",
    "KLWarmup",
    "LatentBlock",
    "LatentChain",
    "MixtureOfGaussiansPrior",
    "StandardNormalPrior",
    "VampPrior",
    "bounds",
    "builders",
    "callbacks",
    "checks",
    "conv_vae",
    "data",
    "diagnostics",
    "evaluation",
    "execution",
    "export",
    "hierarchical",
    "hierarchical_vae",
    "init_output_bias",
    "likelihoods",
    "mlp_vae",
    "networks",
    "plots",
    "posteriors",
    "priors",
]
