"""LoRA and quantization for our attention layer, which Keras gives its `EinsumDense`
projections but not `keras.layers.MultiHeadAttention` itself.

Keras' `Dense`, `EinsumDense` and `Conv2D` (so our `PointwiseConv2D` and `StdConv2D` too)
have `enable_lora(rank, lora_alpha)`, keep `lora_rank` in their config and rebuild their LoRA
weights when loaded. A `MultiHeadAttention` builds its four projections itself and saves none
of their settings, so a `.keras` file of one whose projections carry LoRA or were quantized
would not load; `ProjectionSettings` records both in the attention layer's config and
re-applies them when the layer is built.
"""

# The quantization modes whose layout `quantize(mode)` alone determines (GPTQ and AWQ need a
# calibration config).
PROJECTION_QUANTIZATIONS = ("int8", "float8", "int4")


class ProjectionSettings:
    """Mixin for a `keras.layers.MultiHeadAttention`: LoRA on, and quantization of, its
    query/key/value/output projections, kept in the layer's config.

    `enable_lora(rank, lora_alpha)` has the semantics of Keras' `EinsumDense.enable_lora`,
    applied to each projection: its kernel is frozen, a trainable `lora_kernel_a`
    (He-uniform) and `lora_kernel_b` (zeros, so outputs are unchanged at first) are added and
    the kernel becomes `kernel + lora_alpha / rank * a @ b`. For the `(dim, heads, head_dim)`
    query/key/value kernels `a` is `(dim, heads, rank)` and `b` is `(rank, head_dim)`; the
    output kernel `(heads, head_dim, dim)` gets `(heads, head_dim, rank)` and `(rank, dim)`.

    Args:
        lora_rank: LoRA rank of the projections, or None.
        lora_alpha: LoRA scale numerator; default `lora_rank`.
        projection_quantization: the Keras quantization mode of the projections ("int8",
            "float8", "int4"), set by `model.quantize`; None for float projections.
        **kwargs: arguments of the attention layer.
    """

    def __init__(
        self, *args, lora_rank=None, lora_alpha=None, projection_quantization=None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else lora_rank
        self.lora_enabled = False
        self._saved_quantization = projection_quantization

    def projections(self):
        """The query, key, value and output `EinsumDense` layers (once built)."""
        return [self._query_dense, self._key_dense, self._value_dense, self._output_dense]

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        # A loaded layer gets the variables its file holds: quantized first (QLoRA's order),
        # then the LoRA factors.
        if self._saved_quantization and self._query_dense.quantization_mode is None:
            for dense in self.projections():
                dense.quantize(self._saved_quantization)
        if self.lora_rank and not self.lora_enabled:
            self._enable_projections(self.lora_rank, self.lora_alpha)

    def enable_lora(self, rank, lora_alpha=None):
        """Adds LoRA factors of rank `rank` to the four projections and freezes their kernels.

        Args:
            rank: LoRA rank, a positive int.
            lora_alpha: scale numerator; the update is `lora_alpha / rank * a @ b`. Default
                `rank`.

        Raises:
            ValueError: the layer is not built, or LoRA is already enabled.

        Example:
        >>> import keras
        >>> from keras_resvit.layers import MultiHeadSelfAttention
        >>> layer = MultiHeadSelfAttention(num_heads=2, key_dim=4)
        >>> x = keras.ops.ones((1, 3, 8))
        >>> before = layer(x, x)
        >>> layer.enable_lora(2)
        >>> [w.name for w in layer.trainable_weights][:3]
        ['bias', 'lora_kernel_a', 'lora_kernel_b']
        >>> float(keras.ops.max(keras.ops.abs(layer(x, x) - before)))
        0.0
        """
        if not self.built:
            raise ValueError(f"Cannot enable LoRA on layer {self.name!r}: it is not built yet.")
        if self.lora_enabled:
            raise ValueError(
                f"LoRA is already enabled on layer {self.name!r} (rank {self.lora_rank}); it "
                "can be enabled once per layer."
            )
        self._enable_projections(rank, lora_alpha)

    def _enable_projections(self, rank, lora_alpha):
        for dense in self.projections():
            dense.enable_lora(rank, lora_alpha=lora_alpha)
        self.lora_rank = rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else rank
        self.lora_enabled = True

    def get_config(self):
        config = super().get_config()
        if self.lora_rank:
            config.update(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha)
        mode = self._query_dense.quantization_mode if self.built else self._saved_quantization
        if mode in PROJECTION_QUANTIZATIONS:
            config["projection_quantization"] = mode
        return config
