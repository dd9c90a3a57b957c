"""The deployment files in deploy/ agree with the server they deploy: every path and
command they name exists. (nginx.conf is run for real by test_rolling_restart.py;
no Docker, systemd or Kubernetes runs in CI, see docs/DEPLOY.md.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from canopy.server import load_config
from canopy.showcase import create_app

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def routes() -> set[str]:
    _config, settings = load_config(None, environ={})
    app = create_app().boot(settings)
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_kubernetes_probes_and_the_autoscaler_read_real_routes() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "canopy.yaml").read_text()))
    kinds = [doc["kind"] for doc in documents]
    assert kinds.count("Deployment") == 2 and "ScaledObject" in kinds
    known = routes()
    for doc in documents:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["args"][:2] in (["canopy", "serve"], ["canopy", "worker"])
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["path"] in known
        if doc["kind"] == "ScaledObject":
            (trigger,) = doc["spec"]["triggers"]
            assert re.sub(r"^https?://[^/]+", "", trigger["metadata"]["url"]) in known
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    _config, settings = load_config(None, environ=config)  # every setting is valid
    assert settings.store.startswith("redis://") and settings.broker.startswith("redis://")


def test_the_dockerfile_copies_what_exists_and_its_config_loads() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        assert (ROOT / source).exists(), source
    config, _settings = load_config(str(DEPLOY / "hypercorn.container.toml"), environ={})
    assert config.bind == ["0.0.0.0:8000"]


def test_the_systemd_unit_runs_canopy_serve_with_time_to_drain() -> None:
    unit = (DEPLOY / "canopy.service").read_text()
    assert re.search(r"^ExecStart=\S+/canopy serve --config \S+$", unit, re.MULTILINE)
    config, settings = load_config(str(ROOT / "hypercorn.toml"), environ={})
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert stop > config.graceful_timeout + config.shutdown_timeout + settings.service_grace
