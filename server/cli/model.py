"""The model commands of ``crossbit``: train, evaluate, export-onnx and export-light (these need torch)."""

from __future__ import annotations

import json
from pathlib import Path


def add_model_commands(sub) -> None:
    """The parsers of train, evaluate and export-onnx."""
    _add_train(sub)
    _add_evaluate(sub)
    p = sub.add_parser("export-onnx", help="export the image backbone to ONNX",
                       description="Export the image backbone for ONNX Runtime (used "
                       "automatically on the CPU; this writes it where you want it).")
    p.add_argument("--backbone", default="efficientnet-lite0",
                   help="image backbone to export (default %(default)s)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p = sub.add_parser("export-light", help="write a model for serving without torch",
                       description="Write a light model: the ONNX graphs, tokenizer, config and "
                       "fingerprint of a model exactly as this install serves it on the CPU, in "
                       "a folder that `crossbit serve --model FOLDER` serves without torch (the "
                       "same codes and fingerprint). --wheel also packs the default model's as "
                       "the crossbit-light-model wheel, which a torch-less install serves as "
                       "its default model.")
    p.add_argument("--model", default="default",
                   help="a shipped name or a model folder (default %(default)s)")
    p.add_argument("--out", required=True, help="the folder to write (a new one, or a light "
                   "model to replace)")
    p.add_argument("--wheel", metavar="DIST", help="also write the crossbit-light-model wheel "
                   "into this folder (the default model only)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a hash model",
                       description="Train hash heads on frozen-backbone features cached on disk "
                       "(CPU, minutes) or fine-tune the backbones end to end (--finetune, GPU). "
                       "Up to 10,000 images the heads start from the shipped model's (--init). "
                       "The trained model and the one it started from (or the shipped model) "
                       "are scored on the same held-out images, and the better is written: "
                       "you are told which and by how much.")
    p.add_argument("--captions", required=True,
                   help="dataset file: captions CSV (image,caption), COCO captions JSON, "
                   "Karpathy JSON, or multi-label CSV (image,text,labels)")
    p.add_argument("--images", required=True, help="folder the image names are relative to")
    p.add_argument("--format", choices=["csv", "coco", "karpathy", "multilabel"], default="csv",
                   help="how --captions is laid out (default %(default)s)")
    p.add_argument("--split", help="csv: file of training image names; karpathy: split name")
    p.add_argument("--val-images", type=int, default=None,
                   help="images held out of the training data for early stopping and the final "
                        "comparison (default: none below 40 images, a quarter up to 50 images, "
                        "a tenth from 500 images, at most 500)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--bits", type=int, default=64, help="code length: 16, 32, 64, 128, 256")
    p.add_argument("--backbone", default="efficientnet-lite0", help="efficientnet-lite0, resnet18")
    p.add_argument("--backbone-weights", help="local weights file for the backbone")
    p.add_argument("--text-model", default="minilm-l6",
                   help="minilm-l6 (6 layers, the default), mpnet-base (12 layers; make mpnet) or a "
                        "local Hugging Face BERT directory")
    p.add_argument("--objective", choices=["infonce", "triplet", "dcmh"], default="infonce",
                   help="infonce; triplet = the seeds' max-violation ranking loss; dcmh = labels")
    p.add_argument("--margin", type=float, default=0.2,
                   help="triplet loss margin (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="most passes over the training data; early stopping may end sooner "
                        "(default 60)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per training step (default: 128; 64 below 640 training images, "
                        "32 below 256)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate, cosine-decayed (default 5e-4)")
    p.add_argument("--hidden", type=int, default=1024,
                   help="hidden width of the hash heads' MLP (default %(default)s)")
    p.add_argument("--dropout", type=float, default=0.3,
                   help="dropout in the hash heads (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="Adam weight decay (default %(default)s)")
    p.add_argument("--embed-dim", type=int, default=0,
                   help="extra float embedding for re-ranking (0 = re-rank on tanh outputs)")
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without a better held-out score before stopping (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train this many seeds (from --seed) and keep the best on the "
                        "held-out images (frozen-backbone training)")
    p.add_argument("--distill", type=float, default=1.0,
                   help="weight of distilling a wider float teacher's in-batch similarities "
                        "into the codes (the teacher trains first; 0 = off)")
    p.add_argument("--teacher-dim", type=int, default=512, help="the float teacher's width")
    p.add_argument("--one-caption", action="store_true",
                   help="one random caption per image per batch (default with infonce: all)")
    p.add_argument("--crop-views", type=int, default=0,
                   help="cache features of this many random crops of each training image and "
                        "draw from them as augmentation (each costs one more feature pass; "
                        "the shipped model uses 8)")
    p.add_argument("--finetune", action="store_true", help="train the backbones too (GPU)")
    p.add_argument("--tune-text", action="store_true",
                   help="then tune the text encoder with the heads against the locked image "
                        "tower (images from the feature cache; CPU, minutes per epoch); the "
                        "text model is written beside the heads")
    p.add_argument("--init", default="auto",
                   help="where the heads start: 'auto' (the default: the shipped model's heads "
                        "when they have the --bits, --backbone, --text-model and head options "
                        "asked for and there are at most 10,000 images, else fresh heads), "
                        "'none' (fresh heads), 'default', 'mpnet-64' or a model folder (its "
                        "config replaces those options); with --tune-text, a model given here "
                        "is tuned without training its heads first")
    p.add_argument("--keep-trained", action="store_true",
                   help="write the trained model even when it does not beat the model it "
                        "started from (or the shipped model) on the held-out images; a warning "
                        "says by how much")
    p.add_argument("--replay",
                   help="captions CSV (image,caption) of the data the starting model was "
                        "trained on (Flickr8k for the shipped ones), mixed into training so that "
                        "it keeps what it knew; without it, training on another domain forgets "
                        "much of it")
    p.add_argument("--replay-images", help="folder the --replay image names are relative to")
    p.add_argument("--replay-split", help="file of --replay image names to use (e.g. train.txt)")
    p.add_argument("--replay-share", type=float, default=0.5,
                   help="share of the training images drawn from --replay (default %(default)s)")
    p.add_argument("--text-lr", type=float, default=2e-5,
                   help="the text encoder's learning rate with --tune-text (default %(default)s)")
    p.add_argument("--tune-lr", type=float, default=1e-4,
                   help="the heads' learning rate with --tune-text (default %(default)s)")
    p.add_argument("--tune-epochs", type=int, default=6,
                   help="most epochs of --tune-text, early-stopped on the held-out images "
                        "(default %(default)s)")
    p.add_argument("--tune-rounds", type=int, default=3,
                   help="captions drawn per image in each --tune-text epoch (default %(default)s)")
    p.add_argument("--cache", default=".cache/features", help="feature cache folder")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip rows with missing images or empty captions (counted)")
    p.add_argument("--device", help="torch device (default: CUDA if visible)")
    p.add_argument("--json", help="also write the validation report here")


def _add_evaluate(sub) -> None:
    from crossbit.encoders.config import IMAGE_RUNTIMES, TEXT_RUNTIMES

    p = sub.add_parser("evaluate", help="score a model on a dataset",
                       description="Recall@1/5/10, median rank, precision@K and mAP in both "
                       "directions over the Hamming ranking (ties: expected value under random "
                       "order) and over the float embeddings; PR curve over Hamming radius; "
                       "encoding and search speed. Writes JSON and PNG plots.")
    p.add_argument("--captions", required=True, help="dataset file (see train --format)")
    p.add_argument("--images", required=True, help="folder the image names are relative to")
    p.add_argument("--format", choices=["csv", "coco", "karpathy", "multilabel"], default="csv",
                   help="how --captions is laid out (default %(default)s)")
    p.add_argument("--split", help="csv: file of image names to evaluate on; karpathy: split")
    p.add_argument("--model", help="model directory or shipped name: default, mpnet-64 "
                   "(default: the shipped default)")
    p.add_argument("--json", required=True, help="where to write the report")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.add_argument("--cache", help="feature cache folder (default: none)")
    p.add_argument("--runtime", choices=IMAGE_RUNTIMES, default="auto",
                   help="image backbone runtime")
    p.add_argument("--text-runtime", choices=TEXT_RUNTIMES, default="auto",
                   help="text encoder runtime (int8: ONNX int8 weights)")
    p.add_argument("--device", help="torch device (default: CUDA if visible, else the CPU)")


def check_train_flags(args) -> None:
    """Refuse contradictory train flags in flag words, before any loading."""
    def refuse(message: str):
        raise ValueError(message)

    if args.tune_text and args.finetune:
        refuse("--tune-text and --finetune exclude each other (--finetune trains both towers)")
    if args.finetune and args.init not in ("auto", "none"):
        refuse("--init starts heads training or --tune-text; --finetune starts from fresh heads")
    if args.seeds < 1:
        refuse(f"--seeds must be at least 1, got {args.seeds}")
    if args.seeds > 1 and args.val_images == 0:
        refuse("--seeds above 1 keeps the best seed on held-out images: not with --val-images 0")
    for flag in ("distill", "crop_views"):
        if getattr(args, flag) < 0:
            refuse(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    for flag in ("tune_epochs", "tune_rounds", "epochs", "batch_size", "patience"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            refuse(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.val_images is not None and args.val_images < 0:
        refuse(f"--val-images must be >= 0, got {args.val_images}")
    if args.replay and not args.replay_images:
        refuse("--replay needs --replay-images (the folder its image names are relative to)")
    if (args.replay_images or args.replay_split) and not args.replay:
        refuse("--replay-images and --replay-split go with --replay")
    if not 0 < args.replay_share < 1:
        refuse(f"--replay-share must be between 0 and 1, got {args.replay_share}")
    from crossbit.encoders.training.catalog import MIN_HELD_OUT

    for flag, ok, rule in (("lr", lambda v: v > 0, "> 0"), ("weight_decay", lambda v: v >= 0, ">= 0"),
                           ("dropout", lambda v: 0 <= v < 1, "in [0, 1)")):
        value = getattr(args, flag, None)
        if value is not None and not ok(value):
            refuse(f"--{flag.replace('_', '-')} must be {rule}, got {value}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        refuse(f"--out {args.out} is a file: give a folder for the model")
    if args.val_images is not None and 0 < args.val_images < MIN_HELD_OUT:
        refuse(f"--val-images {args.val_images}: at least {MIN_HELD_OUT} images are needed to "
               "tell a better model from a lucky one (or --val-images 0 with --keep-trained, "
               "to write the trained model unchecked)")


def need_full(command: str) -> None:
    """Refuse, in one line, a command that needs torch in an install without it."""
    from crossbit.encoders.light import torch_installed

    if not torch_installed():
        raise ValueError(f"needs torch, which this serving install does not have: run `crossbit "
                         f"{command}` from the full install (pip install '.[full]', or make setup)")


def cmd_train(args) -> int:
    need_full("train")
    import logging

    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.training import TrainConfig
    from crossbit.encoders.training.catalog import plan_for
    from crossbit.encoders.training.recipes import load_pairs, train_model

    check_train_flags(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pairs = load_pairs(args.format, args.captions, args.images, args.split, args.skip_bad)
    if args.val_images is not None and args.val_images >= len(pairs.images):
        raise ValueError(f"--val-images {args.val_images} leaves nothing to train on "
                         f"({len(pairs.images)} images)")
    plan = plan_for(len(pairs.images), args.val_images, args.batch_size, args.epochs, args.lr,
                    args.patience)
    if args.seeds > 1 and plan.val_images == 0:
        raise ValueError(f"--seeds above 1 keeps the best seed on held-out images, and none are "
                         f"held out from {len(pairs.images)} images: give --val-images 20 or more")
    print(f"{len(pairs.images)} images, {len(pairs.captions)} texts; {plan.describe(len(pairs.images))}")
    replay = None
    if args.replay:
        replay = load_pairs("csv", args.replay, args.replay_images, args.replay_split,
                            args.skip_bad)
        print(f"replay: {len(replay.images)} images of {args.replay} available, "
              f"{args.replay_share:.0%} of each epoch's images drawn from them")
    model_config = ModelConfig(bits=args.bits, image_backbone=args.backbone,
                               image_weights=args.backbone_weights, text_model=args.text_model,
                               hidden=args.hidden, dropout=args.dropout, embed_dim=args.embed_dim)
    train_config = TrainConfig(objective=args.objective, margin=args.margin, epochs=plan.epochs,
                               batch_size=plan.batch_size, lr=plan.lr, patience=plan.patience,
                               weight_decay=args.weight_decay, seed=args.seed,
                               seeds=args.seeds, finetune=args.finetune,
                               distill=args.distill, teacher_dim=args.teacher_dim,
                               all_captions=not args.one_caption, crop_views=args.crop_views,
                               tune_text=args.tune_text, text_lr=args.text_lr, tune_lr=args.tune_lr,
                               tune_epochs=args.tune_epochs, tune_rounds=args.tune_rounds)
    report = train_model(model_config, train_config, pairs, plan.val_images, args.out,
                         args.cache, args.device, init=args.init, keep_trained=args.keep_trained,
                         replay=replay, replay_share=args.replay_share, say=print)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    if "text_to_image" in report:
        from crossbit.encoders.training.evaluate import format_report

        print("validation (held-out training images):")
        print(format_report(report))
        print(summary_line(report, plan.val_images))
    print(f"model written to {args.out}")
    return 0


def summary_line(report: dict, held_out: int) -> str:
    """One line: held-out recall of the new model, and of the shipped one on the same data."""
    def r(block, direction):
        return "/".join(f"{block[direction][f'recall@{k}']:.1f}" for k in (1, 5, 10))

    line = (f"held-out ({held_out} images) R@1/5/10, Hamming: text->image {r(report, 'text_to_image')}"
            f", image->text {r(report, 'image_to_text')}")
    shipped = report.get("shipped_model")
    if shipped:
        line += (f"; the shipped model on the same images: {r(shipped, 'text_to_image')} and "
                 f"{r(shipped, 'image_to_text')}")
    return line


def cmd_evaluate(args) -> int:
    need_full("evaluate")
    import logging

    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_head_runtime, use_image_runtime, use_text_runtime
    from crossbit.encoders.training.evaluate import format_report, run_evaluation
    from crossbit.encoders.training.recipes import load_pairs

    logging.basicConfig(level=logging.WARNING)
    pairs = load_pairs(args.format, args.captions, args.images, args.split)
    model = HashModel.load(args.model, device=args.device)
    use_image_runtime(model, args.runtime)
    use_text_runtime(model, args.text_runtime)
    use_head_runtime(model)  # the codes the server makes
    report = run_evaluation(model, pairs, args.json, plots=not args.no_plots, cache=args.cache,
                            speed=not args.no_speed)
    print(format_report(report))
    print(f"report written to {args.json}")
    return 0


def cmd_export_onnx(args) -> int:
    need_full("export-onnx")
    from crossbit.encoders.onnx_image import export_backbone

    print(f"wrote {export_backbone(args.backbone, args.out)}")
    return 0


def cmd_export_light(args) -> int:
    need_full("export-light")
    from crossbit.encoders.light_export import export_light, write_wheel
    from crossbit.server.logs import quiet_third_parties

    quiet_third_parties()
    folder = export_light(None if args.model == "default" else args.model, args.out)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"wrote the light model of {args.model} to {folder} ({size / 1e6:.1f} MB; its codes "
          f"checked against the full model's): crossbit serve --model {folder}")
    if args.wheel:
        wheel = write_wheel(folder, args.wheel)
        print(f"wrote {wheel} ({wheel.stat().st_size / 1e6:.1f} MB): pip install it beside "
              "crossbit to serve the default model without torch")
    return 0


MODEL_COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "export-onnx": cmd_export_onnx,
                  "export-light": cmd_export_light}
