"""Render a kustomization the way `kubectl apply -k` does, for the few features deploy/ uses.

There is no kustomize (a Go program) here; the manifests keep to what this renderer knows, and the
renderer refuses any other kustomization field rather than ignore it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def render(directory: Path) -> list[dict[str, Any]]:
    """The documents the kustomization in `directory` produces."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    assert not unknown, f"the test renderer does not implement {sorted(unknown)}"
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        for document in yaml.safe_load_all((directory / resource).read_text()):
            if document:
                documents.append(_transform(copy.deepcopy(document), kustomization))
    return documents


def _transform(document: dict[str, Any], kustomization: dict[str, Any]) -> dict[str, Any]:
    metadata = document.setdefault("metadata", {})
    if "namespace" in kustomization and document["kind"] not in CLUSTER_SCOPED:
        metadata["namespace"] = kustomization["namespace"]
    for entry in kustomization.get("labels", []):
        # Without includeSelectors/includeTemplates, kustomize labels the resources' metadata only.
        assert not entry.get("includeSelectors")
        assert not entry.get("includeTemplates")
        metadata.setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for container in _containers(document):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return document


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if document["kind"] != "CronJob" else {}
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
