r"""Fine-tunes a pre-trained ResNet or ViT on your images, starting from published weights.

`--weights` names published weights of `--model` (`keras-resvit list --weights` lists them;
downloaded once, verified and cached) or a weights file (without `--model`, the architecture is
read from the file's array shapes: an original ViT `.npz`, a timm state dict, a
keras.applications `.h5`). The pre-trained classifier is replaced by a
zero-initialized one for the data's classes, then:
- a ViT is resized to `--image-size` (`kr.resize_vit`: the patch size stays, the position
  embeddings are interpolated) and trained with the ViT paper's fine-tuning recipe
  (`vit_finetune`: SGD 0.9, lr 0.01 at batch 512, 500 warm-up steps, cosine decay, clipping
  at global norm 1; Dosovitskiy et al. 2021, Appendix B.1.1);
- a ResNet is built at `--image-size` and trained with BiT's fine-tuning rule (`bit_finetune`:
  SGD 0.9, lr 0.003 at batch 512, /10 at 30%, 60% and 90% after 500 warm-up steps, MixUp 0.1;
  Kolesnikov et al. 2020).
`--data` is an image folder with `train/` and `test/` sub-folders (one folder of images per
class in each), `digits`, or `tfds:NAME`. Prints the test accuracy; `--output` holds the run
(`best.keras`, `last.keras`, `history.csv`).

CPU-friendly run (the bundled digits, no download: a ViT-Ti/16 from random weights at 64 px;
it shows the mechanics only, since the recipes assume pre-trained weights):
    python examples/finetune.py --output runs/finetune

The ViT paper's setting (ViT-B/16 pre-trained on ImageNet-21k, fine-tuned on CIFAR-10 at 384 px
for 10k steps of batch 512):
    python examples/finetune.py --model vit_b16 --weights google_in21k \
        --data tfds:cifar10 --image-size 384 --batch-size 512 --epochs 103 \
        --output runs/vit_b16_cifar10

A ViT-B/16 (AugReg2: ImageNet-21k, then ImageNet-1k) fine-tuned at 384 px, and a ResNet-50
("ResNet strikes back" A1, 80.4% top-1) at 224 px, on a folder of photos (an accelerator):
    python examples/finetune.py --model vit_b16 --weights augreg2_in21k_ft_in1k \
        --data ~/flowers --image-size 384 --batch-size 64 --epochs 10 --output runs/flowers_vit
    python examples/finetune.py --model resnet50 --weights a1_in1k \
        --data ~/flowers --image-size 224 --batch-size 64 --epochs 10 --output runs/flowers_r50
"""

import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=None,
        help="registry name (default: vit_ti16, or the architecture of a --weights file)",
    )
    parser.add_argument(
        "--weights", default=None, help="published weights' name or a weights file (default: none)"
    )
    parser.add_argument("--data", default="digits", help="image folder, digits or tfds:NAME")
    parser.add_argument("--image-size", type=int, default=64, help="default: 64")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32")
    parser.add_argument("--epochs", type=int, default=2, help="default: 2")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="peak lr at the recipe's batch size"
    )
    parser.add_argument("--distribution", default="auto", help="auto, none, tpu, mirrored, ...")
    parser.add_argument("--output", default="runs/finetune", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in the output folder"
    )
    return parser.parse_args(argv)


def is_vit(kr, name, weights):
    if name is None:
        return weights is None or kr.weights.weights_format(weights) == "vit_npz"
    return kr.models.registry.get_spec(name).family in ("vit", "hybrid_vit")


def pretrained_model(kr, name, weights, image_size, num_classes):
    """The pre-trained model at `image_size`, with a new head: the registry model `name` with
    `weights`, or (`name` None) the model a weights file describes."""
    if is_vit(kr, name, weights):
        if name is None and weights is not None:
            model = kr.weights.load_weights(weights)
        else:
            model = kr.create_model(name or "vit_ti16", weights=weights)
        model = kr.resize_vit(model, image_size)
    elif name is None:
        model = kr.weights.load_weights(weights, input_shape=(image_size, image_size, 3))
    else:
        shape = (image_size, image_size, 3)
        model = kr.create_model(name, weights=weights, input_shape=shape)
    print(f"{model.name} ({weights or 'random weights'}) at {image_size} px, {num_classes} classes")
    return kr.replace_head(model, num_classes)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr

    recipe = "vit_finetune" if is_vit(kr, args.model, args.weights) else "bit_finetune"
    # Flips and crops would change digits; photos get the recipe's augmentation.
    augment = None if args.data == "digits" else kr.training.RECIPES[recipe].augment
    size, batch = args.image_size, args.batch_size
    train = kr.data.load_dataset(
        args.data, "train", image_size=size, batch_size=batch, augment=augment
    )
    test = kr.data.load_dataset(args.data, "test", image_size=size, batch_size=batch)
    model = pretrained_model(kr, args.model, args.weights, size, train.num_classes)
    history = kr.train(
        model,
        train,
        recipe=recipe,
        epochs=args.epochs,
        val_data=test,
        output_dir=args.output,
        learning_rate=args.learning_rate,
        distribution=args.distribution,
        overwrite=args.overwrite,
        verbose=2,
    )
    accuracy = history.history["val_accuracy"][-1]
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs ({recipe}); in {args.output}")


if __name__ == "__main__":
    main()
