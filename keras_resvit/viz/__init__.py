"""Pictures of models and runs (matplotlib, PNG out)."""

from keras_resvit.viz.curves import plot_history

__all__ = ["plot_history"]
