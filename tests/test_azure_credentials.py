"""The driver's own Azure credentials renew themselves for the whole deployment: which one the
ARM_* variables of a CI runner choose, and that an OIDC assertion is asked for afresh each time
(no token service is reached: the assertion function is called against a stand-in)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from azure.identity import (
    AzurePipelinesCredential,
    ClientAssertionCredential,
    ManagedIdentityCredential,
)

from zdd.errors import BadInput
from zdd.targets import azure

CLIENT, TENANT = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
RUNNER_VARIABLES = (
    "ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_CLIENT_SECRET", "ARM_USE_MSI", "ARM_USE_OIDC",
    "ARM_OIDC_TOKEN", "ARM_OIDC_REQUEST_URL", "ARM_OIDC_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID", "SYSTEM_ACCESSTOKEN",
)  # fmt: skip


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A runner environment with none of the credential variables, then the ones a test sets."""
    for name in RUNNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARM_CLIENT_ID", CLIENT)
    monkeypatch.setenv("ARM_TENANT_ID", TENANT)
    return monkeypatch


def test_github_actions_oidc_asks_for_a_fresh_token_for_every_assertion(runner) -> None:
    runner.setenv("ARM_USE_OIDC", "true")
    runner.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://token.example/ask?v=1")
    runner.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-bearer")
    asked: list[httpx.Request] = []

    def token_service(url: str, **options: Any) -> httpx.Response:
        request = httpx.Request("GET", url, params=options["params"], headers=options["headers"])
        asked.append(request)
        return httpx.Response(200, json={"value": f"oidc-{len(asked)}"}, request=request)

    runner.setattr(httpx, "get", token_service)
    credential = azure._credential()
    assert isinstance(credential, ClientAssertionCredential)
    # What Entra ID gets each time it needs an assertion: a new token, never a kept one.
    assert [credential._func(), credential._func()] == ["oidc-1", "oidc-2"]
    assert asked[0].headers["Authorization"] == "Bearer runner-bearer"
    assert asked[0].url.params["audience"] == "api://AzureADTokenExchange"


def test_azure_pipelines_uses_its_service_connection_not_a_static_token(runner) -> None:
    runner.setenv("ARM_USE_OIDC", "true")
    runner.setenv("ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID", "sc-1")
    runner.setenv("SYSTEM_ACCESSTOKEN", "job-token")
    runner.setenv("ARM_OIDC_TOKEN", "static-id-token")  # present, and ignored
    assert isinstance(azure._credential(), AzurePipelinesCredential)


def test_a_runners_managed_identity_is_used_when_asked_for(runner) -> None:
    runner.setenv("ARM_USE_MSI", "true")
    assert isinstance(azure._credential(), ManagedIdentityCredential)


def test_a_static_oidc_token_alone_is_refused_before_anything_changes(runner) -> None:
    runner.setenv("ARM_USE_OIDC", "true")
    runner.setenv("ARM_OIDC_TOKEN", "expires-in-ten-minutes")
    with pytest.raises(BadInput, match=r"expires within minutes.*ARM_USE_MSI.*Nothing was changed"):
        azure._credential()
