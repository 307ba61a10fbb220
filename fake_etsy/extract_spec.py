"""Writes fake_etsy/etsy_v3_subset.json: the few operations and schemas of Etsy's Open API v3 that
the fake serves, copied from Etsy's own document (github.com/etsy/open-api, openapi.json, commit
6d6b1aa, June 2021), descriptions dropped. Run again on a newer openapi.json to refresh it:

    python -m fake_etsy.extract_spec path/to/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OPERATIONS = {  # path -> methods the fake serves
    "/v3/application/shops/{shop_id}/listings/active": ["get"],
    "/v3/application/listings/{listing_id}/inventory": ["get", "put"],
    "/v3/application/shops/{shop_id}/receipts": ["get"],
    "/v3/application/shops/{shop_id}": ["get"],
    "/v3/application/listings/active": ["get"],  # findAllListingsActive: others' listings, API key only
}
SCHEMAS = ["Money", "ShopListing", "ShopListings", "ListingInventory", "ListingInventoryProduct",
           "ListingInventoryProductOffering", "ShopReceipt", "ShopReceipts", "ShopReceiptTransaction",
           "ShopReceiptShipment", "Shop"]
OUT = Path(__file__).with_name("etsy_v3_subset.json")


def _bare(node):
    """The node without prose (descriptions, examples): only names, types and bounds remain."""
    if isinstance(node, dict):
        return {k: _bare(v) for k, v in node.items() if k not in ("description", "example", "summary")}
    if isinstance(node, list):
        return [_bare(v) for v in node]
    return node


def extract(document: dict) -> dict:
    paths = {}
    for path, methods in OPERATIONS.items():
        if path in document["paths"]:
            paths[path] = {m: _bare({k: v for k, v in document["paths"][path][m].items()
                                     if k in ("operationId", "parameters", "requestBody")}) for m in methods}
    schemas = {name: _bare(document["components"]["schemas"][name]) for name in SCHEMAS}
    oauth = document["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]
    return {"source": "github.com/etsy/open-api openapi.json", "info": _bare(document["info"]),
            "oauth2": {"authorizationUrl": oauth["authorizationUrl"], "tokenUrl": oauth["tokenUrl"]},
            "paths": paths, "schemas": schemas}


if __name__ == "__main__":
    OUT.write_text(json.dumps(extract(json.loads(Path(sys.argv[1]).read_text())), indent=1, sort_keys=True) + "\n")
