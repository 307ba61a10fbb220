"""A shop's connection to Etsy, the outcome of each price push, and the pure reading and writing of
Etsy's shapes (money objects, inventories). No I/O: the HTTP client is streams/etsy_client.py.

Secrets never enter these events: tokens and PKCE verifiers live encrypted beside the log
(marketplace.etsy_grants, commands/marketplace.py).
"""

from __future__ import annotations

import base64
import copy
import hashlib
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta
from domain.money import Money, minor_unit

CONNECTED, REVOKED, DISCONNECTED = "connected", "revoked", "disconnected"
SCOPES = ("listings_r", "listings_w", "transactions_r", "shops_r")
PUT_DROPPED = ("product_id", "offering_id", "is_deleted")  # in a GET's answer, refused in a PUT
ETSY_MIN_PRICE, ETSY_MAX_PRICE = Decimal("0.20"), Decimal("50000")  # an offering's price, as Etsy accepts it


def s256(verifier: str) -> str:
    """PKCE's S256 code challenge of a verifier (RFC 7636): base64url of its SHA-256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def connection_id(shop_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"etsypro:etsy-connection:{shop_id}")


def push_id(listing_id: UUID, version: int) -> UUID:
    """One push record per accepted price change (listing, version): recording it twice cannot happen."""
    return uuid5(NAMESPACE_URL, f"etsypro:etsy-push:{listing_id}:{version}")


class EtsyConnection(Aggregate):
    """Whether the shop's listings and orders flow to and from Etsy: connected, revoked (Etsy
    refused the grant: sync and push pause until the seller connects again) or disconnected."""

    @event("Connected")
    def __init__(self, shop_id: UUID, etsy_shop_id: int, etsy_user_id: int, scopes: list[str], meta: EventMeta):
        self.shop_id = shop_id
        self._connected(etsy_shop_id, etsy_user_id)

    def _connected(self, etsy_shop_id: int, etsy_user_id: int) -> None:
        self.etsy_shop_id, self.etsy_user_id = etsy_shop_id, etsy_user_id
        self.status, self.reason = CONNECTED, ""

    @classmethod
    def connect(cls, shop_id: UUID, etsy_shop_id: int, etsy_user_id: int, scopes: list[str],
                meta: EventMeta) -> EtsyConnection:
        missing = sorted(set(SCOPES) - set(scopes))
        if missing:
            raise InvalidValue("scope", f"the grant lacks {', '.join(missing)}")
        return cls(shop_id=shop_id, etsy_shop_id=etsy_shop_id, etsy_user_id=etsy_user_id, scopes=sorted(scopes),
                   meta=meta)

    @staticmethod
    def create_id(shop_id: UUID, **_) -> UUID:
        return connection_id(shop_id)

    def reconnect(self, etsy_shop_id: int, etsy_user_id: int, scopes: list[str], meta: EventMeta) -> None:
        missing = sorted(set(SCOPES) - set(scopes))
        if missing:
            raise InvalidValue("scope", f"the grant lacks {', '.join(missing)}")
        self._reconnected(etsy_shop_id=etsy_shop_id, etsy_user_id=etsy_user_id, scopes=sorted(scopes), meta=meta)

    @event("Reconnected")
    def _reconnected(self, etsy_shop_id: int, etsy_user_id: int, scopes: list[str], meta: EventMeta) -> None:
        self._connected(etsy_shop_id, etsy_user_id)

    def disconnect(self, meta: EventMeta) -> bool:
        if self.status == DISCONNECTED:
            return False
        self._disconnected(meta=meta)
        return True

    @event("Disconnected")
    def _disconnected(self, meta: EventMeta) -> None:
        self.status, self.reason = DISCONNECTED, "disconnected by the seller"

    def grant_revoked(self, answer: str, meta: EventMeta) -> bool:
        """Etsy refused the grant (a password change revokes every token): recorded once."""
        if self.status != CONNECTED:
            return False
        self._grant_revoked(answer=answer, meta=meta)
        return True

    @event("GrantRevoked")
    def _grant_revoked(self, answer: str, meta: EventMeta) -> None:
        self.status, self.reason = REVOKED, answer

    def drift_refused(self, listing_id: UUID, etsy_price: Money, engine_price: Money, refusal: str,
                      meta: EventMeta) -> None:
        """A price seen at Etsy that the listing's guardrails refuse: recorded, the listing keeps its price."""
        self._drift_refused(listing_id=listing_id, etsy_price=etsy_price, engine_price=engine_price,
                            refusal=refusal, meta=meta)

    @event("DriftRefused")
    def _drift_refused(self, listing_id: UUID, etsy_price: Money, engine_price: Money, refusal: str,
                       meta: EventMeta) -> None:
        pass


PUSHED, FAILED, RETRYING = "pushed", "failed", "retrying"


class EtsyPush(Aggregate):
    """The push of one accepted price change (listing, version) to Etsy and its outcome."""

    @event("Started")
    def __init__(self, shop_id: UUID, listing_id: UUID, version: int, price: Money, meta: EventMeta):
        self.shop_id, self.listing_id, self.version, self.price = shop_id, listing_id, version, price
        self.outcome, self.attempts = None, 0

    @staticmethod
    def create_id(listing_id: UUID, version: int, **_) -> UUID:
        return push_id(listing_id, version)

    def retrying(self, status: int | None, answer: str, wait_s: float, meta: EventMeta) -> None:
        self._refuse_after_outcome()
        self._retrying(status=status, answer=answer[:2000], wait_s=round(wait_s, 3), meta=meta)

    @event("Retrying")
    def _retrying(self, status: int | None, answer: str, wait_s: float, meta: EventMeta) -> None:
        self.attempts += 1

    def pushed(self, meta: EventMeta) -> None:
        self._refuse_after_outcome()
        self._pushed(meta=meta)

    @event("Pushed")
    def _pushed(self, meta: EventMeta) -> None:
        self.outcome = PUSHED

    def failed(self, status: int | None, answer: str, meta: EventMeta) -> None:
        """Etsy refused the push (or answered what cannot be read): Etsy's answer is kept."""
        self._refuse_after_outcome()
        self._failed(status=status, answer=answer[:2000], meta=meta)

    @event("Failed")
    def _failed(self, status: int | None, answer: str, meta: EventMeta) -> None:
        self.outcome = FAILED

    def _refuse_after_outcome(self) -> None:
        if self.outcome is not None:
            raise InvariantViolated("outcome", f"the push of version {self.version} already {self.outcome}")


# -- Etsy's shapes ----------------------------------------------------------------------------
def etsy_money(value, field: str) -> Money:
    """An Etsy money object {amount, divisor, currency_code} as Money; InvalidValue naming the field."""
    if not isinstance(value, dict):
        raise InvalidValue(field, f"expected a money object, got {type(value).__name__}")
    amount, divisor, currency = value.get("amount"), value.get("divisor"), value.get("currency_code")
    if isinstance(amount, bool) or not isinstance(amount, int) or isinstance(divisor, bool) \
            or not isinstance(divisor, int) or divisor <= 0 or not isinstance(currency, str) or len(currency) != 3:
        raise InvalidValue(field, f"not a money object: {value!r:.200}")
    value = Decimal(amount) / divisor
    try:  # in the currency's minor units when that is exact (1700/100 GBP is 17.00, as the engine writes it)
        exact = value.quantize(minor_unit(currency))
    except (KeyError, InvalidOperation):
        raise InvalidValue(field, f"unknown currency {currency!r}") from None
    return Money(exact if exact == value else value, currency)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def inventory_for_put(inventory, price: Money) -> dict:
    """The PUT body that sets `price` and keeps everything else of a GET's inventory: ids and
    is_deleted dropped, money objects as floats. When prices vary by a property, each offering
    moves by the ratio of the new price to the first product's (the engine prices the listing)."""
    if not isinstance(inventory, dict) or not isinstance(inventory.get("products"), list) or not inventory["products"]:
        raise InvalidValue("inventory.products", "Etsy's inventory has no products")
    base = _first_price(inventory)
    if base.currency != price.currency:
        raise InvalidValue("inventory.products[0].offerings[0].price.currency",
                           f"Etsy prices in {base.currency}, the listing in {price.currency}")
    varies = bool(inventory.get("price_on_property"))
    products = []
    for i, product in enumerate(inventory["products"]):
        if not isinstance(product, dict) or not isinstance(product.get("offerings"), list):
            raise InvalidValue(f"inventory.products[{i}].offerings", "missing")
        kept = {k: copy.deepcopy(v) for k, v in product.items() if k not in PUT_DROPPED and k != "offerings"}
        kept["offerings"] = [_offering(o, f"inventory.products[{i}].offerings[{j}]", price, base, varies)
                             for j, o in enumerate(product["offerings"]) if not (isinstance(o, dict) and o.get("is_deleted"))]
        products.append(kept)
    return {"products": products, **{k: list(inventory.get(k) or []) for k in
                                     ("price_on_property", "quantity_on_property", "sku_on_property")}}


def _first_price(inventory: dict) -> Money:
    try:
        return etsy_money(inventory["products"][0]["offerings"][0]["price"], "inventory.products[0].offerings[0].price")
    except (KeyError, IndexError, TypeError):
        raise InvalidValue("inventory.products[0].offerings[0].price", "missing") from None


def _offering(offering, field: str, price: Money, base: Money, varies: bool) -> dict:
    if not isinstance(offering, dict):
        raise InvalidValue(field, "not an object")
    own = etsy_money(offering.get("price"), f"{field}.price")
    try:
        amount = _cents(own.amount * price.amount / base.amount) if varies and base.amount else price.amount
    except InvalidOperation:
        raise InvalidValue(f"{field}.price", "cannot be scaled") from None
    if not ETSY_MIN_PRICE <= amount <= ETSY_MAX_PRICE:
        raise InvalidValue(f"{field}.price", f"{amount} is outside the prices Etsy accepts ({ETSY_MIN_PRICE} to {ETSY_MAX_PRICE})")
    kept = {k: copy.deepcopy(v) for k, v in offering.items() if k not in PUT_DROPPED}
    kept["price"] = float(amount)
    return kept


def price_of_inventory(inventory) -> Money:
    """The listing's price as the engine sees it: the first product's first offering."""
    if not isinstance(inventory, dict) or not isinstance(inventory.get("products"), list) or not inventory["products"]:
        raise InvalidValue("inventory.products", "Etsy's inventory has no products")
    return _first_price(inventory)


# -- what Etsy answered, as the engine's code tells it apart ----------------------------------
class EtsyRefused(Exception):
    """Etsy answered a refusal (4xx) or something that cannot be read: retrying will not help."""

    def __init__(self, status: int | None, answer: str):
        super().__init__(f"Etsy answered {status}: {answer[:500]}" if status else answer[:500])
        self.status, self.answer = status, answer


class GrantRefused(EtsyRefused):
    """The grant is gone (tokens revoked, e.g. by a password change): the seller must connect again."""


class EtsyUnavailable(Exception):
    """A 5xx, a timeout or a broken connection: worth trying again later."""

    def __init__(self, status: int | None, answer: str):
        super().__init__(f"Etsy unavailable ({status}): {answer[:300]}")
        self.status, self.answer = status, answer
