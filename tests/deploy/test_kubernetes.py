"""The Kubernetes manifests of deploy/kubernetes: valid against Kubernetes' JSON schemas, consistent
with the image and the service, and a working configuration for several replicas on PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from sqlalchemy import create_engine, text

from pgm.config import load_settings, normalise_database_url
from pgm.providers.registry import validate as validate_providers
from pgm.store.migrator import sync_url
from tests.support.databases import POSTGRES_URL, fresh_database
from tests.support.dockerfile import parse
from tests.support.kustomize import render
from tests.support.pgm_process import PgmProcess

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy/kubernetes"
# Oldest and newest Kubernetes releases the manifests are checked against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Created by the operator, never committed (docs/deploying.md says how).
OPERATOR_SECRETS = {"pgm-secrets"}
FIRST_REVISION = re.findall(
    r'^revision = "(\w+)"', (ROOT / "src/pgm/store/migrations/versions/0001_initial_schema.py").read_text(), re.M
)[0]


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return render(MANIFESTS)


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (pgm,) = one(documents, "Deployment", "pgm")["spec"]["template"]["spec"]["containers"]
    return dict(pgm)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(documents: list[dict[str, Any]], version: str) -> None:
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    for document in documents:
        # Strict: an unknown or misspelt field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(document, version, strict=True)
        assert document["metadata"]["namespace"] == "payments"


def test_a_misspelt_field_is_caught_by_the_schemas(documents: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(documents, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/-/ready"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_deployment_runs_the_image_as_the_image_expects(documents: list[dict[str, Any]]) -> None:
    deployment = one(documents, "Deployment", "pgm")
    pod = deployment["spec"]["template"]["spec"]
    pgm = container(documents)
    config = one(documents, "ConfigMap", "pgm-config")["data"]
    assert deployment["spec"]["replicas"] >= 2
    assert pgm["image"] == "registry.example.com/payments/pgm:0.1.0"
    assert pgm["resources"]["requests"] == {"cpu": "100m", "memory": "300Mi"}
    assert pgm["resources"]["limits"]["memory"] == "300Mi"
    (port,) = pgm["ports"]
    assert port["containerPort"] == int(config["HTTP_PORT"])
    assert pgm["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": port["name"]}
    assert pgm["livenessProbe"]["httpGet"] == {"path": "/-/healthz", "port": port["name"]}
    runtime = parse(ROOT / "Dockerfile")["runtime"]
    uid, gid = runtime.last("USER").split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pgm["args"] == json.loads(runtime.last("CMD"))
    sources = {next(iter(source)): next(iter(source.values()))["name"] for source in pgm["envFrom"]}
    assert sources == {"configMapRef": "pgm-config", "secretRef": "pgm-secrets"}
    assert set(sources.values()) - {"pgm-config"} <= OPERATOR_SECRETS
    assert "pgm-secrets" in (ROOT / "docs/deploying.md").read_text()


def test_the_external_providers_file_is_mounted_where_the_setting_points(documents: list[dict[str, Any]]) -> None:
    path = Path(one(documents, "ConfigMap", "pgm-config")["data"]["EXTERNAL_PROVIDERS_CONFIG"])
    pgm = container(documents)
    (mount,) = [m for m in pgm["volumeMounts"] if m["mountPath"] == str(path.parent)]
    pod = one(documents, "Deployment", "pgm")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    files = one(documents, "ConfigMap", volume["configMap"]["name"])["data"]
    assert path.name in files
    assert "externalServices" in json.loads(files[path.name])


def test_selectors_match_the_pods(documents: list[dict[str, Any]]) -> None:
    labels = one(documents, "Deployment", "pgm")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert one(documents, kind)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(documents, "Service", "pgm")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container(documents)["ports"][0]["name"]
    assert one(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_config_map_is_a_valid_configuration(documents: list[dict[str, Any]], tmp_path: Path) -> None:
    env = service_environment(documents, tmp_path, "postgresql://pgm:secret@db:5432/pgm")
    settings = load_settings(env)
    validate_providers(settings)
    assert settings.saga_enabled
    assert settings.database_pool_size + settings.database_max_overflow + 2 <= 100 // 4


def service_environment(documents: list[dict[str, Any]], directory: Path, database_url: str) -> dict[str, str]:
    """The environment the container gets, with the mounted files written under `directory`."""
    env = dict(one(documents, "ConfigMap", "pgm-config")["data"])
    path = Path(env["EXTERNAL_PROVIDERS_CONFIG"])
    pod = one(documents, "Deployment", "pgm")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "pgm-external-providers"]
    (directory / path.name).write_text(one(documents, "ConfigMap", volume["configMap"]["name"])["data"][path.name])
    env["EXTERNAL_PROVIDERS_CONFIG"] = str(directory / path.name)
    # What the operator's Secret pgm-secrets holds (docs/deploying.md).
    env.update(PGM_DATABASE_URL=database_url, PGM_API_TOKEN="operator-token")
    return env


@pytest.mark.skipif(not POSTGRES_URL, reason="several replicas need PostgreSQL: set PGM_TEST_DATABASE_URL")
def test_replicas_start_together_on_one_postgresql_and_pass_their_probes(
    documents: list[dict[str, Any]], tmp_path: Path
) -> None:
    pgm = container(documents)
    with fresh_database("postgresql", tmp_path) as url:
        env = service_environment(documents, tmp_path, url)
        env.pop("HTTP_PORT")  # each replica here gets a port of its own, as each pod has its own address
        replicas = [PgmProcess(url, tmp_path / f"replica-{n}.log", **env) for n in range(3)]
        try:
            # Started at the same moment: migrations must be applied once, under the advisory lock.
            with ThreadPoolExecutor(len(replicas)) as pool:
                list(pool.map(lambda replica: replica.start(timeout=90), replicas))
            for replica in replicas:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    assert replica.get(pgm[probe]["httpGet"]["path"]).status_code == 200
        finally:
            for replica in replicas:
                replica.stop()


def test_a_replica_stays_ready_when_a_newer_release_has_migrated_the_database(
    start_pgm: Callable[..., PgmProcess],
) -> None:
    # A rolling update: the new release's first pod migrates at start; the old pods must keep serving
    # (the readiness probe used to ask for exactly this release's newest migration, taking them all out).
    pgm = start_pgm()
    assert pgm.get("/-/ready").json()["checks"]["migrations"] == "OK"
    engine = create_engine(sync_url(normalise_database_url(pgm.env["PGM_DATABASE_URL"])))
    try:
        for revision, status, state in (("9f9f9f9f9f9f", 200, "ahead"), (FIRST_REVISION, 503, "pending")):
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
            answer = pgm.get("/-/ready")
            assert (answer.status_code, answer.json()["checks"]["migrations"]) == (status, state)
    finally:
        engine.dispose()
