"""Feature views declared in code: which entity, which state, how long it lives."""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.windows import HORIZON_DAYS, DAY_S


@dataclass(frozen=True, slots=True)
class FeatureView:
    """Day-bucketed windows of one entity type.

    ``sums`` says whether amount sums are kept beside counts. ``ttl_s`` is refreshed
    on every write, so an entity unseen for longer than the horizon disappears.
    """

    name: str
    entity: str
    sums: bool
    ttl_s: int = (HORIZON_DAYS + 1) * DAY_S


CARD_WINDOWS = FeatureView("card_tx", entity="card_id", sums=True)
TERMINAL_WINDOWS = FeatureView("terminal_tx", entity="terminal_id", sums=False)
SENDER_WINDOWS = FeatureView("sender_mail", entity="sender", sums=False)
DOMAIN_WINDOWS = FeatureView("domain_mail", entity="sender_domain", sums=False)

ALL_VIEWS = (CARD_WINDOWS, TERMINAL_WINDOWS, SENDER_WINDOWS, DOMAIN_WINDOWS)
