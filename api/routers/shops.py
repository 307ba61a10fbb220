from uuid import UUID

from fastapi import Response

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.routing import resource_router
from api.schemas import ListingsRegistered, Shop, ShopList, ShopOpened, answer
from commands import models

router = resource_router(prefix="/shops", tags=["shops"])


@router.post("", status_code=201, response_model=ShopOpened, summary="Open a shop",
             dependencies=[requires("shops:create")])
async def open_shop(cmd: models.OpenShop, ctx: Context, engine: Engine, response: Response):
    """Opens a shop in the caller's tenant, with the currency every price of it is in; a seller
    opening a shop is granted it.

    **Changes:** appends the shop's Shop.Opened event (and a seller's grant of it on their account)."""
    return await answer(response, engine.listings.open_shop, ctx, cmd)


@router.get("", response_model=ShopList, summary="The caller's shops", dependencies=[requires("shops:read")])
def list_shops(ctx: Context, reads: Reads) -> dict:
    return {"shops": [str(s) for s in reads.shops.shops_of(ctx.tenant_id) if ctx.may_see(s)]}


@router.get("/{shop_id}", response_model=Shop, summary="A shop's current state", dependencies=[requires("shops:read")])
def get_shop(shop_id: UUID, ctx: Context, engine: Engine) -> dict:
    tenant, currency = engine.core.shop_facts(ctx, shop_id)
    shop = engine.core.repository.get(shop_id)
    return {"shop_id": str(shop.id), "name": shop.name, "currency": shop.currency,
            "marketplace": shop.marketplace, "version": shop.version}


@router.post("/{shop_id}/listings", status_code=201, response_model=ListingsRegistered,
             summary="Register one or many listings (all or nothing)", dependencies=[requires("prices:write")])
async def register_listings(shop_id: UUID, cmd: models.RegisterListings, ctx: Context, engine: Engine, response: Response):
    """Registers listings with their price and guardrails; external ids and SKUs are unique in the
    shop (a taken one is a 409 naming it).

    **Changes:** appends one Listing.Registered event per listing, all or nothing."""
    return await answer(response, engine.listings.register_listings, ctx, shop_id, cmd)
