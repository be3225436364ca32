"""Matching measured against hidden links (sieoug_formats/links.py, sieoug_recbole/link_diagnostics.py)."""

import os

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_YAML, build_on_synthetic

import sieoug_recbole
from sieoug_formats.links import LinkFileError, read_links, write_links
from sieoug_recbole.link_diagnostics import LinkDiagnostics, link_rows, plan_statistics


def test_link_files_round_trip_and_bad_files_are_one_clear_line(tmp_path):
    path = str(tmp_path / "p.links.tsv")
    assert write_links(path, [("u2", "u2~t"), ("u1", "u1~t")]) == "p.links.tsv"
    assert read_links(path) == [("u1", "u1~t"), ("u2", "u2~t")]
    assert write_links(path, []) is None and not os.path.exists(path)  # no de-linked user, no file
    with pytest.raises(LinkFileError, match=r"link file .*missing.tsv: No such file"):
        read_links(str(tmp_path / "missing.tsv"))
    (tmp_path / "bad.tsv").write_text("user\titem\nu1\tu1~t\n")
    with pytest.raises(LinkFileError, match="the first line must be the header"):
        read_links(str(tmp_path / "bad.tsv"))
    (tmp_path / "short.tsv").write_text("source_user_id:token\ttarget_user_id:token\nu1\n")
    with pytest.raises(LinkFileError, match="line 2: expected two tab-separated user tokens"):
        read_links(str(tmp_path / "short.tsv"))


def test_the_synthetic_pair_writes_the_true_links_of_its_delinked_users(synthetic_dir):
    links = read_links(os.path.join(synthetic_dir, "synthetic.links.tsv"))
    assert links and all(target == source + "~t" for source, target in links)
    inter = open(os.path.join(synthetic_dir, "synthetic_target", "synthetic_target.inter")).read()
    assert all(f"\n{target}\t" in inter for _, target in links[:20])


def test_a_link_to_a_user_not_in_the_pair_is_a_clear_error(fast_config):
    model, _, dataset, _ = build_on_synthetic("LightGCN", fast_config)
    token_ids = {
        d: dict(s.field2token_id[s.uid_field])
        for d, s in (("source", dataset.source_domain_dataset), ("target", dataset.target_domain_dataset))
    }
    with pytest.raises(LinkFileError, match=r"x.tsv: line 3: target user 'nobody' is not in the pair's target domain"):
        link_rows([("u1", "u1~t"), ("u2", "nobody")], token_ids, model.layout, "x.tsv")


def test_plan_statistics_of_known_plans():
    m = 40
    identity = torch.eye(m)[:10]
    stats = plan_statistics(identity, torch.arange(10))
    assert (stats["top1"], stats["top10"], stats["mass_ratio"], stats["chance_top10"]) == (1.0, 1.0, m, 10 / m)
    uniform = plan_statistics(torch.full((10, m), 1.0 / m), torch.arange(10))
    assert uniform["mass_ratio"] == pytest.approx(1.0)
    wrong = torch.zeros(10, m)
    wrong[torch.arange(10), torch.arange(10) + 20] = 1.0
    assert plan_statistics(wrong, torch.arange(10))["top1"] == 0.0
    # a sparse plan (FGW's is a permutation): a true entry tied at 0 with the others is not top-10
    assert plan_statistics(wrong, torch.arange(10))["top10"] == 0.0


def test_planted_embeddings_are_found_by_the_population_plan_not_by_batches(fast_config, tmp_path):
    """A model whose target user vectors equal the source vectors of the same person (de-linked
    or not): whole-population GOUM finds the hidden people, per-batch matching rarely can."""
    config = {
        **fast_config,
        "graph_cache_dir": str(tmp_path / "g"),
        "n_clusters": 8,
        "ot_eps": 0.02,
        "train_batch_size": 64,
    }
    model, _, dataset, _ = build_on_synthetic("LightGCN+GOUM", config)
    sources = dataset.source_domain_dataset
    targets = dataset.target_domain_dataset
    token_ids = {
        "source": dict(sources.field2token_id[sources.uid_field]),
        "target": dict(targets.field2token_id[targets.uid_field]),
    }
    links = read_links(os.path.join(config["data_path"], "synthetic.links.tsv"))
    src_rows, tgt_rows = link_rows(links, token_ids, model.layout)
    with torch.no_grad():  # plant: every person's target vector is its source vector
        model.n_layers = 0
        source = model.user_embedding["source"].weight
        target = model.user_embedding["target"].weight
        target.normal_(0, float(source[1:].std()))  # (the other users at the same scale)
        target[tgt_rows] = source[src_rows]
        n_o = model.overlapped_num_users
        target[1:n_o] = source[1:n_o]
    stats = LinkDiagnostics(src_rows, tgt_rows, batch_size=64, batches=6).measure(model)
    assert stats["global_pairs"] == len(links) and stats["global_chance_top10"] == pytest.approx(
        10 / (model.n_users["target"] - 1)
    )
    assert stats["global_top1"] > 0.95 and stats["global_mass_ratio"] > 50
    assert stats["batch_top1"] > 0.9  # in a batch that holds both halves, the pair is found too
    assert stats["batch_chance_top10"] > stats["global_chance_top10"]


def test_training_records_link_statistics_at_the_start_during_and_at_the_best_epoch(fast_config, tmp_path):
    config = {
        **fast_config,
        "dual_domain_eval": True,
        "train_epochs": ["BOTH:4"],
        "link_file": "auto",
        "link_diagnostics_every": 2,
        "graph_cache_dir": str(tmp_path / "g"),
        "n_clusters": 8,
    }
    result = sieoug_recbole.run("SIEOUG", [SYNTHETIC_YAML], config, verbose=False)
    history = result["link_diagnostics"]["history"]
    assert [entry["epoch"] for entry in history] == [0, 2, 4, "best"]
    best = result["link_diagnostics"]["best"]
    for key in (
        "global_mass_ratio",
        "global_top1",
        "global_top10",
        "global_chance_top10",
        "batch_mass_ratio",
        "batch_top10",
        "batch_chance_top10",
        "global_pairs",
    ):
        assert key in best and np.isfinite(best[key])
    without = sieoug_recbole.run(
        "SIEOUG",
        [SYNTHETIC_YAML],
        {**config, "link_diagnostics_every": 0, "checkpoint_dir": str(tmp_path / "b")},
        verbose=False,
    )
    assert without["link_diagnostics"] is None
    # measuring never touches training: the same metrics with and without the diagnostics
    assert without["metrics_by_domain"] == result["metrics_by_domain"]
