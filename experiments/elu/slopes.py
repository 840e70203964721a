"""Leaky ReLU with the negative slope of Clevert et al. 2015's MNIST study, 0.1 (Keras's
``leaky_relu`` defaults to 0.2): ``activation=experiments.elu.slopes:leaky_relu_01``."""

import keras


def leaky_relu_01(x):
    return keras.ops.leaky_relu(x, negative_slope=0.1)
