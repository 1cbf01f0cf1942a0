"""Training curves: loss, accuracy and learning rate per epoch."""

from pathlib import Path

from keras_resvit.files import atomic_path

PANELS = (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate"))


def _columns(history):
    if isinstance(history, (str, Path)):
        from keras_resvit.training.callbacks import read_history

        rows = read_history(history)
        if not rows:
            raise ValueError(f"history={str(history)!r} has no rows; expected a history.csv.")
        return {k: [r.get(k) for r in rows] for k in rows[0]}
    return dict(getattr(history, "history", history))


def plot_history(history, path) -> Path:
    """Draws loss, accuracy (train and validation) and learning rate against epochs.

    Args:
        history: a `keras.callbacks.History`, its `.history` dict, or a `history.csv` path.
        path: PNG file to write (atomically).

    Returns:
        The path written.

    Example:
    >>> plot_history("runs/digits/history.csv", "runs/digits/curves.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(history)
    panels = [(key, title) for key, title in PANELS if key in columns]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        epochs = range(1, len(columns[key]) + 1)
        ax.plot(epochs, columns[key], label="train")
        if f"val_{key}" in columns:
            ax.plot(epochs, columns[f"val_{key}"], label="validation")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return Path(path)
