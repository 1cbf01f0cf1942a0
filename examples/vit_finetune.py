"""Fine-tunes a pre-trained ViT at a higher resolution (Dosovitskiy et al. 2021, Section 3.2).

Loads a checkpoint (`--weights`: an original google-research/vision_transformer `.npz` or a
timm state dict; the architecture is read from the file's array shapes), resizes it
to `--image-size` (the patch size stays, so the sequence grows and the learned position
embeddings are interpolated bicubically by their place in the image), puts a zero-initialized
classifier for the dataset's classes on it, and trains with the `vit_finetune` recipe: SGD
0.9, lr 0.01 per 512 images, 500 warm-up steps then cosine decay, no weight decay, gradient
clipping at global norm 1. Prints the test accuracy; the run folder holds the checkpoints.

CPU-friendly run (no checkpoint: a ViT-Ti/16 from random weights at 64 px on the bundled
digits; shows the mechanics only, since the recipe assumes pre-trained weights):
    python examples/vit_finetune.py --output runs/vit_finetune

The paper's setting (ViT-B/16 pre-trained on ImageNet-21k, fine-tuned on CIFAR-10 at 384 px
for 10k steps of batch 512; an accelerator):
    python examples/vit_finetune.py --weights imagenet21k_ViT-B_16.npz \
        --data tfds:cifar10 --image-size 384 --batch-size 512 --epochs 103 \
        --output runs/vit_b16_cifar10
"""

import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=None, help="checkpoint (.npz, .safetensors, .pth)")
    parser.add_argument(
        "--model", default="vit_ti16", help="registry name when no --weights (default: vit_ti16)"
    )
    parser.add_argument("--data", default="digits", help="dataset source (default: digits)")
    parser.add_argument("--image-size", type=int, default=64, help="default: 64 (paper: 384)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32 (paper: 512)")
    parser.add_argument("--epochs", type=int, default=2, help="default: 2")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="peak lr per 512 images (0.01)"
    )
    parser.add_argument("--distribution", default="auto", help="auto, none, tpu, mirrored, ...")
    parser.add_argument("--output", default="runs/vit_finetune", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace finished runs in the output folder"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr

    size = args.image_size
    # Flips and crops would change digits; photos get the recipe's augmentation.
    augment = None if args.data == "digits" else kr.training.RECIPES["vit_finetune"].augment
    train = kr.data.load_dataset(
        args.data, "train", image_size=size, batch_size=args.batch_size, augment=augment
    )
    test = kr.data.load_dataset(args.data, "test", image_size=size, batch_size=args.batch_size)

    load = kr.weights.load_weights if args.weights else kr.create_model
    model = load(args.weights or args.model)
    print(f"{model.name}: {model.input_shape[1]} px -> {size} px, {train.num_classes} classes")
    model = kr.replace_head(kr.resize_vit(model, size), train.num_classes)
    history = kr.train(
        model,
        train,
        recipe="vit_finetune",
        epochs=args.epochs,
        val_data=test,
        output_dir=args.output,
        learning_rate=args.learning_rate,
        distribution=args.distribution,
        overwrite=args.overwrite,
        verbose=2,
    )
    accuracy = history.history["val_accuracy"][-1]
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs; saved in {args.output}")


if __name__ == "__main__":
    main()
