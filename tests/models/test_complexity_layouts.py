"""count_macs on channels_first convolutions and on attention with its own key, attention
axes or output shape; count_params with and without BatchNorm's moving statistics."""

import keras
import pytest

import keras_resvit as kr

L = keras.layers
CF = "channels_first"


@pytest.mark.parametrize(
    "shape, layer, macs",
    [
        # (channels, *positions) in and out; output positions x taps x input channels x filters.
        # 3x32x32 -> 8x30x30: 900 positions x 9 taps x 3 channels x 8 filters.
        ((3, 32, 32), L.Conv2D(8, 3, data_format=CF), 30 * 30 * 9 * 3 * 8),
        # 3x32 -> 8x30.
        ((3, 32), L.Conv1D(8, 3, data_format=CF), 30 * 3 * 3 * 8),
        # 2x4x4x4 -> 3x3x3x3: 27 positions x 8 taps x 2 channels x 3 filters.
        ((2, 4, 4, 4), L.Conv3D(3, 2, data_format=CF), 27 * 8 * 2 * 3),
        # Two groups of 2 input channels: 4x8x8 -> 6x6x6, each filter reads 2 channels.
        ((4, 8, 8), L.Conv2D(6, 3, groups=2, data_format=CF), 36 * 9 * 2 * 6),
        # 3x8x10 -> 6x6x8 (depth multiplier 2): 9 taps per output channel and position.
        ((3, 8, 10), L.DepthwiseConv2D(3, depth_multiplier=2, data_format=CF), 48 * 9 * 6),
        # 3x8x10 -> 4x6x8: 9 depthwise taps on 3 channels, then 3 -> 4 pointwise, per position.
        ((3, 8, 10), L.SeparableConv2D(4, 3, data_format=CF), 48 * 3 * (9 + 4)),
        # 3x8x10 in: each of the 80 input positions scatters a 3x3 kernel of 3 -> 4 channels.
        ((3, 8, 10), L.Conv2DTranspose(4, 3, data_format=CF), 80 * 9 * 3 * 4),
        # Dense on a rank-3 input: each of the 5x7 positions maps 6 features to 4.
        ((5, 7, 6), L.Dense(4), 5 * 7 * 6 * 4),
        # Input axis b summed without meeting the kernel: 5 outputs x 6 (b) x 4 (c).
        ((6, 4), L.EinsumDense("abc,cd->ad", output_shape=5), 5 * 6 * 4),
        ((6, 4), L.EinsumDense("...bc,cd->...d", output_shape=5), 5 * 6 * 4),
    ],
)
def test_layouts_count_each_position_and_channel_once(shape, layer, macs):
    assert kr.count_macs(keras.Sequential([keras.Input(shape), layer])) == macs


# query (5, 8), value (7, 6), key (7, 4); 2 heads, key_dim 3, value_dim 5, output width 8:
# query 5*8*2*3 = 240, key 7*4*2*3 = 168, value 7*6*2*5 = 420, output 5*2*5*8 = 400,
# QK^T 2*5*7*3 = 210, AV 2*5*7*5 = 350.
CROSS = 240 + 168 + 420 + 400 + 210 + 350


@pytest.mark.parametrize(
    "call",
    [
        lambda attention, q, v, k, mask: attention(q, v, key=k),
        lambda attention, q, v, k, mask: attention(q, v, k),
        lambda attention, q, v, k, mask: attention(query=q, value=v, key=k),
        # A mask among the input tensors does not stand in for the key.
        lambda attention, q, v, k, mask: attention(q, v, attention_mask=mask, key=k),
    ],
    ids=["key_keyword", "key_positional", "all_keywords", "with_mask"],
)
def test_attention_projects_the_key_input_not_the_value(call):
    inputs = [keras.Input(shape) for shape in ((5, 8), (7, 6), (7, 4), (5, 7))]
    outputs = call(L.MultiHeadAttention(2, 3, value_dim=5), *inputs)
    assert kr.count_macs(keras.Model(inputs, outputs)) == CROSS == 1788


def test_attention_axes_and_output_shape():
    # Self-attention on (4, 5, 8) along axis 2 only: each of the 20 positions attends to the
    # 5 of its row. Projections 4 x 20*8*2*3 = 3840; QK^T and AV 2*20*5*(3 + 3) = 1200.
    x = keras.Input((4, 5, 8))
    attention = L.MultiHeadAttention(2, 3, attention_axes=(2,))
    assert kr.count_macs(keras.Model(x, attention(x, x))) == 3840 + 1200
    # Output shape (2, 3) per position: the output projection maps 2*3 head features to 6 at
    # each of 5 positions (5*6*6 = 180); q, k, v 3 x 5*8*6 = 720; attention 2*5*5*6 = 300.
    x = keras.Input((5, 8))
    attention = L.MultiHeadAttention(2, 3, output_shape=(2, 3))
    assert kr.count_macs(keras.Model(x, attention(x, x))) == 720 + 180 + 300


def test_count_params_counts_moving_statistics_only_in_the_total():
    # Conv 3*3*3*4 = 108 (no bias), BatchNorm scale + offset 2*4 trainable, mean + variance
    # 2*4 not: the papers' count is the trainable 116, Keras' count_params() all 124.
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(4, 3, use_bias=False), L.BatchNormalization()]
    )
    assert kr.count_params(model) == 108 + 8
    assert kr.count_params(model, trainable_only=False) == 108 + 16 == model.count_params()
