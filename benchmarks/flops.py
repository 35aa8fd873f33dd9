"""The FLOP count behind benchmarks.run's rates: the matmuls of a VAE's Dense layers. Apart from
benchmarks.run, which defines absl flags at import, so that it can be imported anywhere."""


def matmul_flops(model, num_samples, encodings=1):
    """Dense-layer FLOPs of one example: the encoder `encodings` times, and per z sample the decoder
    and, in a hierarchical model, the networks between stochastic layers. Convolutions are not
    counted (None for a model with any)."""
    import keras  # here, as in benchmarks.run: importing this module configures nothing

    per_example = [model.encoder]
    per_sample = [model.decoder, *getattr(model.posterior, "networks", ()), *getattr(model.prior, "networks", ())]

    def leaves(layer):
        return [leaf for inner in layer.layers for leaf in leaves(inner)] if isinstance(layer, keras.Model) else [layer]

    def flops(network):
        layers = leaves(network)
        if any(isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose) for layer in layers):
            return None
        return sum(2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
                   for layer in layers if isinstance(layer, keras.layers.Dense))

    counts = [flops(n) for n in per_example + per_sample]
    if None in counts:
        return None
    return encodings * sum(counts[:1]) + num_samples * sum(counts[1:])
