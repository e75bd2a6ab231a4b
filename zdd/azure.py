"""What the driver knows about the `azure` target: versions, a new stack's config, the drain signal.

- A version is deployable when it is well formed (`zdd.phases.is_valid_version`) and can be put
  into the stack's code template (`zdd:codePackageUrl` or `zdd:containerImage`, `{version}`
  replaced) as a URL path segment or an image tag. Whether that package or image exists is not
  checked here: the clone/verification gates find out (the site does not answer healthy).
- The drain signal comes from the public endpoint: every app answers with its identity header
  (`X-ZDD-Instance`), so the driver samples the public endpoint and counts the answers that may
  still come from the origin being drained.
- Front Door takes minutes to propagate an origin change, hence the longer gate timeouts.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

import httpx

from zdd.environment import Environment
from zdd.errors import BadInput, GateFailed
from zdd.targets import GateTimeouts, TargetOps

IDENTITY_HEADER = "X-ZDD-Instance"
IDENTITY_PATH = "/__identity"
DRAIN_SAMPLES = 10
SAMPLE_TIMEOUT_SECONDS = 10.0
# Front Door propagates a configuration change to its edge in minutes, not seconds.
AZURE_TIMEOUTS = GateTimeouts(healthy=600.0, public_origin=1200.0, drained=1200.0)
VERSION_PLACEHOLDER = "{version}"
# A Docker tag is at most 128 characters of these; the same characters are safe in a URL path.
_TAG_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PASSWORD_SYMBOLS = "-_.!#"  # none of them means anything in a SQL connection string
DEFAULT_SQL_ADMIN_LOGIN = "zddadmin"


def resolve_version(version: str) -> None:
    """A well-formed version is deployable if it fits the code template (see the module doc)."""
    if not _TAG_SAFE.match(version):
        raise BadInput(
            f"version {version!r} cannot be put into the Azure code template: use at most 128 "
            "letters, digits, '.', '_' or '-'"
        )


def generate_password(length: int = 32, avoid: str = DEFAULT_SQL_ADMIN_LOGIN) -> str:
    """An Azure SQL administrator password: every character class, nothing the login contains."""
    alphabet = string.ascii_letters + string.digits + _PASSWORD_SYMBOLS
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, _PASSWORD_SYMBOLS)
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in group for c in password) for group in classes) and (
            avoid.lower() not in password.lower()
        ):
            return password


def _slug(stack: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")[:16].strip("-") or "site"


def _code_template(name: str) -> str | None:
    value = os.environ.get(name) or None
    if value is not None and VERSION_PLACEHOLDER not in value:
        raise BadInput(f"{name} {value!r} has no {VERSION_PLACEHOLDER} placeholder")
    return value


def initial_config(env: Environment, stack: str) -> dict[str, str]:
    """The Azure keys a new stack needs. The code template comes from the environment
    (`ZDD_AZURE_CODE_PACKAGE_URL` or `ZDD_AZURE_CONTAINER_IMAGE`); every other key has a
    default that `ZDD_AZURE_<KEY>` overrides. `sqlAdminPassword` is generated once here and must
    be stored as a secret (`zdd.stack.SECRET_KEYS`)."""
    del env  # nothing on the local machine belongs to an Azure stack
    package = _code_template("ZDD_AZURE_CODE_PACKAGE_URL")
    image = _code_template("ZDD_AZURE_CONTAINER_IMAGE")
    if (package is None) == (image is None):
        raise BadInput(
            "an Azure stack needs its code: set ZDD_AZURE_CODE_PACKAGE_URL (a run-from-package "
            "URL) or ZDD_AZURE_CONTAINER_IMAGE (an image), with {version} where the version goes"
        )
    prefix = os.environ.get("ZDD_AZURE_NAME_PREFIX") or f"zdd-{_slug(stack)}-{secrets.token_hex(3)}"
    login = os.environ.get("ZDD_AZURE_SQL_ADMIN_LOGIN") or DEFAULT_SQL_ADMIN_LOGIN
    values = {
        "azureLocation": os.environ.get("ZDD_AZURE_LOCATION") or "westeurope",
        "resourceGroupName": os.environ.get("ZDD_AZURE_RESOURCE_GROUP_NAME") or f"rg-{prefix}",
        "namePrefix": prefix,
        "appServiceSku": os.environ.get("ZDD_AZURE_APP_SERVICE_SKU") or "P0v3",
        "databaseSku": os.environ.get("ZDD_AZURE_DATABASE_SKU") or "S0",
        "backupRetentionDays": os.environ.get("ZDD_AZURE_BACKUP_RETENTION_DAYS") or "7",
        "healthCheckPath": "/healthz",
        "cloneOwnPlan": "false",
        "sqlAdminLogin": login,
        "sqlAdminPassword": generate_password(avoid=login),
    }
    if package is not None:
        values["codePackageUrl"] = package
    if image is not None:
        values["containerImage"] = image
    for key, variable in (
        ("migrationCommand", "ZDD_AZURE_MIGRATION_COMMAND"),
        ("operatorIpAddresses", "ZDD_AZURE_OPERATOR_IP_ADDRESSES"),
    ):
        if os.environ.get(variable):
            values[key] = os.environ[variable]
    return values


def in_flight(outputs: Mapping[str, Any], origin: str) -> int:
    """How many of `DRAIN_SAMPLES` answers of the public endpoint may still come from `origin`.

    An answer counts unless it names another origin in `X-ZDD-Instance`: a failed request or an
    answer without the header (a Front Door error page) cannot prove that `origin` is drained.
    Each sample uses a new connection (Front Door may route connections differently) and a
    unique query string (no cache can answer for the origin).
    """
    public_url = outputs.get("public_url")
    if not public_url:
        raise GateFailed("drain check: the stack has no public_url output yet")
    counted = failed = 0
    last_error = ""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=SAMPLE_TIMEOUT_SECONDS, limits=limits) as client:
        for sample in range(DRAIN_SAMPLES):
            try:
                response = client.get(
                    f"{public_url}{IDENTITY_PATH}",
                    params={"zdd-drain": f"{time.time_ns()}-{sample}"},
                    headers={"Cache-Control": "no-cache"},
                )
            except httpx.HTTPError as exc:
                counted += 1
                failed += 1
                last_error = exc.__class__.__name__
                continue
            served_by = response.headers.get(IDENTITY_HEADER)
            if served_by is None or served_by == origin:
                counted += 1
    if failed == DRAIN_SAMPLES:
        raise GateFailed(
            f"drain check: the public endpoint {public_url} does not answer ({last_error}); "
            f"the {origin} was not touched"
        )
    return counted


AZURE = TargetOps(
    name="azure",
    resolve_version=resolve_version,
    initial_config=initial_config,
    in_flight=in_flight,
    timeouts=AZURE_TIMEOUTS,
)
