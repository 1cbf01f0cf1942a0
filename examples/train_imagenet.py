r"""Trains a ResNet or a ViT on ImageNet with a paper's recipe, on any backend and any devices.

`--recipe resnet_imagenet` is He et al. (2016), Section 3.4: SGD 0.9, batch 256, lr 0.1 divided
by 10 when the validation accuracy plateaus, 600k iterations (120 epochs; `--epochs` sets
another length), coupled weight decay 1e-4, scale augmentation (shorter side in [256, 480],
random 224 crop, flip) and PCA lighting; `--recipe resnet_imagenet_step` divides at epochs 30
and 60 of 90 instead, with colour jitter. `--recipe deit` is Touvron et al.'s data-efficient ViT
recipe: AdamW, lr 5e-4 per 512 images, cosine over 300 epochs, RandAugment, random erasing,
MixUp/CutMix, label smoothing and stochastic depth. The learning rate scales with the global
batch. `--distribution auto` picks TPUStrategy (TensorFlow on a TPU VM), MirroredStrategy
(several GPUs) or keras.distribution.DataParallel (JAX, every device and host); pass
`--precision mixed_bfloat16` on TPUs and on GPUs from Ampere on, `mixed_float16` on older GPUs.
A preempted run resumes when the same command runs again (`--save-every` saves inside epochs
too).

ImageNet comes from tensorflow-datasets, which needs the ILSVRC2012 archives downloaded by hand
into `<data-dir>/downloads/manual` (see the tfds imagenet2012 page); other sources work too.

CPU-friendly run (Imagenette, a 10-class ImageNet subset that tfds downloads, at 128 px):
    python examples/train_imagenet.py --data tfds:imagenette/160px --image-size 128 \
        --model resnet18 --batch-size 64 --epochs 5 --output runs/imagenette

The papers' settings (ImageNet; a TPU VM or a multi-GPU machine):
    python examples/train_imagenet.py --data-dir gs://BUCKET/tfds --recipe resnet_imagenet \
        --model resnet50 --precision mixed_bfloat16 --save-every 1000 --output runs/resnet50
    KERAS_BACKEND=jax python examples/train_imagenet.py --data-dir gs://BUCKET/tfds \
        --recipe deit --model vit_b16 --batch-size 1024 --precision mixed_bfloat16 \
        --output runs/deit_b
"""

import argparse

RECIPES = ("resnet_imagenet", "resnet_imagenet_step", "deit")
DEFAULT_MODEL = {
    "resnet_imagenet": "resnet50",
    "resnet_imagenet_step": "resnet50",
    "deit": "vit_b16",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="tfds:imagenet2012", help="default: tfds:imagenet2012")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    parser.add_argument("--train-split", default="train", help="default: train")
    parser.add_argument("--val-split", default="validation", help="default: validation")
    parser.add_argument("--recipe", default="resnet_imagenet", choices=RECIPES)
    parser.add_argument(
        "--model", default=None, help="registry name (default: resnet50, or vit_b16 with deit)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="default: 224")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--distribution", default="auto", help="auto, none, tpu, mirrored, ...")
    parser.add_argument(
        "--precision",
        default="float32",
        help="float32, mixed_bfloat16 (TPU, GPU from Ampere on), mixed_float16 (older GPU)",
    )
    parser.add_argument("--save-every", type=int, default=None, help="resume state every N steps")
    parser.add_argument("--output", default="runs/imagenet", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace finished runs in the output folder"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras

    import keras_resvit as kr

    recipe = kr.training.RECIPES[args.recipe]
    name = args.model or DEFAULT_MODEL[args.recipe]
    batch_size = args.batch_size or recipe.batch_size
    data = {"image_size": args.image_size, "batch_size": batch_size, "data_dir": args.data_dir}
    # One batch shape for XLA (TPUs compile for it): drop the last partial training batch.
    train = kr.data.load_dataset(
        args.data, args.train_split, augment=recipe.augment, drop_remainder=True, **data
    )
    val = kr.data.load_dataset(args.data, args.val_split, **data)
    size = args.image_size
    if name in kr.list_models("*vit*"):
        overrides = {"image_size": size, "drop_path": recipe.drop_path}
    else:
        overrides = {"input_shape": (size, size, 3)}
    # Built here for the dataset's classes and size, so under the run's precision.
    keras.config.set_dtype_policy(args.precision)
    history = kr.train(
        kr.create_model(name, num_classes=train.num_classes, **overrides),
        train,
        recipe=args.recipe,
        epochs=args.epochs,
        val_data=val,
        output_dir=args.output,
        distribution=args.distribution,
        precision=args.precision,
        save_every=args.save_every,
        overwrite=args.overwrite,
        verbose=2,
    )
    summary = history.summary
    print(
        f"{name}: {summary['epochs']} epochs, best validation accuracy "
        f"{summary['best_val_accuracy']:.4f}, {summary['images_per_second']:.0f} images/s; "
        f"saved in {summary['output_dir']}"
    )


if __name__ == "__main__":
    main()
