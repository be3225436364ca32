"""Hyperparameter search with RecBole's HyperTuning; the best trial is chosen on validation.

    python run_hyper.py --model=SIEOUG --config_files=properties/synthetic.yaml \
        --params_file=properties/hyper/sieoug.hyper --algo=tpe --max_evals=20 --output_file=hyper.txt

A params file has one line per parameter, as in RecBole:
``learning_rate loguniform -8,0`` / ``lambda choice [0.2,0.6,1.0]`` / ``eps uniform 0.01,0.1``.
"""
import argparse
import functools
import os


def main(argv=None):
    parser = argparse.ArgumentParser(description="RecBole HyperTuning over a params file.")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--params_file", required=True, help="search space, RecBole's format")
    parser.add_argument("--algo", choices=["exhaustive", "tpe"], default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=10, help="trials for tpe")
    parser.add_argument("--output_file", default="hyper_result.txt")
    args = parser.parse_args(argv)

    import sys

    sys.argv = sys.argv[:1]  # RecBole's config reads sys.argv: give it nothing of ours
    from recbole.trainer import HyperTuning

    import sieoug_recbole
    from sieoug_recbole.quick_start import input_errors, read_yaml_file
    from sieoug_recbole.registry import get_model_class

    try:
        get_model_class(args.model)
    except ValueError as error:
        parser.error(f"--model: {error}")
    for file in (args.config_files.split() if args.config_files else []) + [args.params_file]:
        if not os.path.isfile(file):
            parser.error(f"{file} does not exist")
    try:  # a yaml file that does not parse: one error line, before any trial
        [read_yaml_file(file) for file in (args.config_files.split() if args.config_files else [])]
    except input_errors() as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    algo = args.algo
    if algo == "tpe":
        from hyperopt import tpe

        algo = tpe.suggest
    config_files = args.config_files.split() if args.config_files else None
    objective = functools.partial(sieoug_recbole.objective_function, model=args.model)
    tuner = HyperTuning(objective, params_file=args.params_file, fixed_config_file_list=config_files,
                        algo=algo, max_evals=args.max_evals)
    try:
        tuner.run()
    except input_errors() as error:  # missing data or a bad feature file: the message says what and how
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    tuner.export_result(output_file=args.output_file)
    best = tuner.params2result[tuner.params2str(tuner.best_params)]
    print("best params:", tuner.best_params)
    print("best valid result:", best["best_valid_result"])
    print("its test result:", best["test_result"])
    return tuner.best_params, best


if __name__ == "__main__":
    main()
