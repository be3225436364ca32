"""Hyperparameter search over a RecBole ``.hyper`` file; the best trial is chosen on validation.

    python run_hyper.py --model=SIEOUG --config_files=properties/food_kitchen_demo.yaml \
        --params_file=properties/hyper/sieoug.hyper --algo=tpe --max_evals=2 \
        --output_file=hyper.jsonl --train_epochs='["BOTH:5"]'
    python run_hyper.py ... --tool ray [--asha] [--address HOST:PORT] [--cpus_per_trial 1]

A params file has one line per parameter, as in RecBole:
``learning_rate loguniform -8,0`` / ``guide_lambda choice [0.2,0.6,1.0]`` / ``ot_eps uniform 0.01,0.1``.
Any other ``--key=value`` overrides the config of every trial (as in run_sieoug.py). Each trial
is appended to ``--output_file`` as a JSON line when it ends (docs/tuning.md).
"""

import argparse
import os
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Hyperparameter search over a RecBole params file.", allow_abbrev=False
    )
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--params_file", required=True, help="search space, RecBole's format")
    parser.add_argument("--algo", choices=["exhaustive", "tpe"], default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=10, help="trials for tpe")
    parser.add_argument(
        "--output_file", default="hyper_result.jsonl", help="JSON lines, one per trial, appended as each trial ends"
    )
    parser.add_argument(
        "--tool",
        choices=["hyperopt", "ray"],
        default="hyperopt",
        help="hyperopt: RecBole's HyperTuning here, one trial at a time; "
        "ray: Ray Tune (HyperOpt search), trials in parallel",
    )
    ray = parser.add_argument_group("--tool ray")
    ray.add_argument(
        "--address",
        help="a Ray cluster's head HOST:PORT, or auto (the one `ray start` "
        "runs here); default: a new Ray instance on this machine",
    )
    ray.add_argument("--cpus_per_trial", type=float, default=1.0)
    ray.add_argument("--gpus_per_trial", type=float, default=0.0)
    ray.add_argument(
        "--asha",
        action="store_true",
        help="end trials whose validation falls behind (ASHA; stopped trials have no test result)",
    )
    ray.add_argument(
        "--asha_grace_period", type=int, default=1, help="validations a trial runs before ASHA may stop it"
    )
    args, words = parser.parse_known_args(argv)
    return parser, args, words


def main(argv=None):
    parser, args, words = parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # RecBole's config reads sys.argv: overrides reach it as config values

    from sieoug_recbole import tuning
    from sieoug_recbole.quick_start import input_errors, make_config, read_yaml_file
    from sieoug_recbole.registry import get_model_class

    def fail(message):
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    try:
        get_model_class(args.model)
    except ValueError as error:
        parser.error(f"--model: {error}")
    config_files = args.config_files.split() if args.config_files else []
    for file in config_files + [args.params_file]:
        if not os.path.isfile(file):
            parser.error(f"{file} does not exist")
    try:  # everything checked before any trial: files, space, overrides, the data (built if shipped)
        [read_yaml_file(file) for file in config_files]
        overrides = tuning.parse_overrides(words)
        space = tuning.read_space(args.params_file)
        tuning.check_search(space, overrides, config_files)
        make_config(args.model, config_files or None, dict(overrides))
    except (tuning.TuningError, *input_errors()) as error:
        fail(error)

    search = tuning.new_search(args.tool, args.model, config_files, overrides, args.output_file)
    try:
        if args.tool == "ray":
            from sieoug_recbole.tuning_ray import search_ray

            lines = search_ray(
                search,
                args.params_file,
                space,
                args.algo,
                args.max_evals,
                args.address,
                args.cpus_per_trial,
                args.gpus_per_trial,
                args.asha,
                args.asha_grace_period,
            )
        else:
            lines = tuning.search_hyperopt(search, args.params_file, args.algo, args.max_evals)
    except (tuning.TuningError, *input_errors()) as error:
        fail(error)
    except KeyboardInterrupt:
        parser.exit(130, f"interrupted: {len(search['lines'])} finished trial(s) are in {args.output_file}\n")
    failed = sum(line["status"] == "failed" for line in lines)
    print(f"{len(lines)} trial(s), {failed} failed -> {args.output_file}")
    best = tuning.best_line(lines)
    if best is None:
        parser.exit(1, f"{parser.prog}: no trial finished ({failed} failed; their errors are in {args.output_file})\n")
    print("best params:", best["params"])
    print("best valid result:", best["best_valid_result"])
    print("its test result:", best["test_result"])
    return best["params"], best


if __name__ == "__main__":
    main()
