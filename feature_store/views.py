"""Feature views, declared as data: entity, state, fields, types, defaults, TTL, freshness.

A view is one Redis hash per entity (``si:<ns>:<view>:{<entity>}``) of day buckets
(``n<day>`` counts, ``s<day>`` sums) plus the features derived from it. The
declaration says:

- ``entity``: the id the view is keyed by, and whether it is the input topic's
  partition key (``partition_keyed``: one worker owns it) or shared by workers;
- ``fields``: the features computed from the view, each with a type and the
  default used when the view holds nothing for the entity;
- ``ttl_s``: refreshed on every write, so an entity unseen for that long disappears;
  ``horizon_days``: buckets older than this (before the newest) are deleted;
- ``absent_is_default``: whether a missing hash means "the store does not know"
  (the fields are *defaulted*, e.g. label-derived risk before any label arrived) or
  "no earlier events" (a real zero, e.g. a new card's transaction counts);
- ``freshness_s``: for views written by another process (the label app), the
  largest lag of that process's watermark behind the scored event before the
  fields count as *stale*;
- ``writer``: ``stream`` (the workers, per event, idempotently) or ``labels``
  (the faust label app, absolute values);
- ``dedup_ttl_s``: how long the per-event "applied" markers of a stream view live,
  i.e. how late a redelivered event is still recognised and counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.windows import DAY_S, HORIZON_DAYS

PRESENT = "present"
DEFAULTED = "defaulted"
STALE = "stale"


@dataclass(frozen=True, slots=True)
class FeatureField:
    name: str
    type: str = "float"
    default: float = 0.0


@dataclass(frozen=True, slots=True)
class FeatureView:
    """Day-bucketed windows of one entity type, and the features read from them."""

    name: str
    entity: str
    sums: bool
    ttl_s: int = (HORIZON_DAYS + 1) * DAY_S
    fields: tuple[FeatureField, ...] = ()
    horizon_days: int = HORIZON_DAYS
    partition_keyed: bool = False
    absent_is_default: bool = False
    freshness_s: int | None = None
    writer: str = "stream"
    dedup_ttl_s: int = 3 * DAY_S

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name, "entity": self.entity, "partition_keyed": self.partition_keyed,
            "writer": self.writer, "ttl_s": self.ttl_s, "horizon_days": self.horizon_days,
            "absent_is_default": self.absent_is_default, "freshness_s": self.freshness_s,
            "dedup_ttl_s": self.dedup_ttl_s if self.writer == "stream" else None,
            "state": {"n<day>": "int count", "s<day>": "float sum" if self.sums else "unused"},
            "fields": [{"name": f.name, "type": f.type, "default": f.default} for f in self.fields],
        }


def _f(*names: str) -> tuple[FeatureField, ...]:
    return tuple(FeatureField(n) for n in names)


CARD_WINDOWS = FeatureView(
    "card_tx", entity="card_id", sums=True, partition_keyed=True,
    fields=_f("cust_nb_tx_1d", "cust_avg_amount_1d", "cust_nb_tx_7d", "cust_avg_amount_7d",
              "cust_nb_tx_30d", "cust_avg_amount_30d"),
)
TERMINAL_WINDOWS = FeatureView(
    "terminal_tx", entity="terminal_id", sums=False,
    fields=_f("term_nb_tx_1d", "term_nb_tx_7d", "term_nb_tx_30d"),
)
#: Written by the label app from ``fraud.labels``: ``n<day>`` labelled transactions of
#: the terminal on that (transaction) day, ``s<day>`` the fraudulent ones.
TERMINAL_RISK = FeatureView(
    "terminal_risk", entity="terminal_id", sums=True, writer="labels",
    ttl_s=46 * DAY_S, horizon_days=45, absent_is_default=True, freshness_s=DAY_S,
    fields=_f("term_risk_1d", "term_risk_7d", "term_risk_30d"),
)
SENDER_WINDOWS = FeatureView(
    "sender_mail", entity="sender", sums=False,
    fields=_f("sender_msgs_1d_log1p", "sender_msgs_7d_log1p", "sender_msgs_30d_log1p"),
)
DOMAIN_WINDOWS = FeatureView(
    "domain_mail", entity="sender_domain", sums=False,
    fields=_f("domain_msgs_1d_log1p", "domain_msgs_7d_log1p", "domain_msgs_30d_log1p"),
)
#: Written by the label app from ``spam.feedback``: ``n<day>`` user reports about the
#: sender's (domain's) mail of that day, ``s<day>`` those that said spam.
SENDER_REPORTS = FeatureView(
    "sender_reports", entity="sender", sums=True, writer="labels",
    ttl_s=46 * DAY_S, horizon_days=45, absent_is_default=True, freshness_s=DAY_S,
    fields=_f("sender_reports_30d_log1p", "sender_spam_share_30d"),
)
DOMAIN_REPORTS = FeatureView(
    "domain_reports", entity="sender_domain", sums=True, writer="labels",
    ttl_s=46 * DAY_S, horizon_days=45, absent_is_default=True, freshness_s=DAY_S,
    fields=_f("domain_reports_30d_log1p", "domain_spam_share_30d"),
)

ALL_VIEWS = (CARD_WINDOWS, TERMINAL_WINDOWS, TERMINAL_RISK, SENDER_WINDOWS, DOMAIN_WINDOWS,
             SENDER_REPORTS, DOMAIN_REPORTS)
VIEWS_BY_NAME = {v.name: v for v in ALL_VIEWS}

#: The label app's watermark per label stream (newest ``label_ts`` materialised), which
#: ``freshness_s`` is measured against.
WATERMARK_OF = {"terminal_risk": "fraud_labels", "sender_reports": "spam_feedback", "domain_reports": "spam_feedback"}
