"""A faithful fake of Etsy's Open API v3, for tests, benchmarks and the demo (`etsypro fake-etsy`).

Its operations, parameter names and bounds, and answer shapes come from Etsy's own OpenAPI
document (etsy_v3_subset.json, made by extract_spec.py); its behaviour follows Etsy's documentation
and issue tracker as issue 14 lists it. It imports nothing of the engine's.
"""

from fake_etsy.app import FakeEtsy, FakeEtsyConfig, create_app

__all__ = ["FakeEtsy", "FakeEtsyConfig", "create_app"]
