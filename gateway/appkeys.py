"""Typed keys for what the aiohttp app holds (shared by handlers and middlewares)."""

from __future__ import annotations

from aiohttp import web

from actors.system import ActorSystem
from actors.system.topology import Topology
from gateway.admission import BodyBudget
from gateway.config import Config
from gateway.identity import Pseudonymizer
from gateway.metrics import Metrics

CONFIG = web.AppKey("config", Config)
SYSTEM = web.AppKey("system", ActorSystem)
PSEUDONYMS = web.AppKey("pseudonyms", Pseudonymizer)
METRICS = web.AppKey("metrics", Metrics)
TOPOLOGY = web.AppKey("topology", Topology)
INTERNAL_KEY = web.AppKey("internal_key", str)  # internal.py rule 1 ("" when not sharded)
BODIES = web.AppKey("bodies", BodyBudget)  # request bodies in memory (admission.py)
