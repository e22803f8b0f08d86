"""The Kubernetes API as plain JSON over HTTP, for the operator's own calls.

kopf watches Sensors and Integrations through its own client. Everything else the operator does
(SensorRuns from the run store's threads, Secrets, Jobs, Pods, Events, the peering object) goes
through `Kube`: a small synchronous client whose objects stay plain dicts, exactly as the API
serves them, and which can be called from any thread (from the event loop via
`asyncio.to_thread`). It logs in the same way as kopf (see `login`), so both reach the same
server with the same identity.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import kopf

from hiphops.loader import API_GROUP

from .settings import Settings

logger = logging.getLogger("hiphops.operator.kube")

MERGE_PATCH: Final = "application/merge-patch+json"
_LIST_PAGE: Final = 250


@dataclass(frozen=True)
class Resource:
    """A kind of object in the API: where its collection lives."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection (all namespaces when `namespace` is None) or object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base


SENSORS: Final = Resource(API_GROUP, "v1alpha1", "sensors", "Sensor")
INTEGRATIONS: Final = Resource(API_GROUP, "v1alpha1", "integrations", "Integration")
SENSORRUNS: Final = Resource(API_GROUP, "v1alpha1", "sensorruns", "SensorRun")
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
PODS: Final = Resource("", "v1", "pods", "Pod")
EVENTS: Final = Resource("", "v1", "events", "Event")
JOBS: Final = Resource("batch", "v1", "jobs", "Job")
CLUSTER_PEERINGS: Final = Resource(
    "kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False
)
PEERINGS: Final = Resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")


class ApiError(Exception):
    """The API answered with an error (or could not be reached: status 0).

    The message is the API's own `Status.message`, which names objects but never holds the
    content of a Secret.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


def login(
    settings: Settings,
    *,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    kopf_settings: kopf.OperatorSettings | None = None,
) -> kopf.ConnectionInfo | None:
    """How to reach the API: `settings.kube_api` if set, else in-cluster or kubeconfig (through
    the `kubernetes` client's loaders, which also run kubeconfig exec plugins). Used by kopf's
    login handler and by `Kube`, so both use the same server and identity."""
    if settings.kube_api:
        token = None
        if settings.kube_token_file is not None:
            token = settings.kube_token_file.read_text(encoding="utf-8").strip()
        return kopf.ConnectionInfo(server=settings.kube_api, token=token, scheme="Bearer")
    return kopf.login_via_client(
        logger=log or logger, settings=kopf_settings or kopf.OperatorSettings()
    )


def _materialize(data: str | bytes, suffix: str, keep: list[Any]) -> str:
    # ssl wants files for client certificates; the temporary file lives as long as the client.
    handle = tempfile.NamedTemporaryFile(suffix=suffix)  # noqa: SIM115 - kept open on purpose
    handle.write(data.encode() if isinstance(data, str) else data)
    handle.flush()
    keep.append(handle)
    return handle.name


def _client(info: kopf.ConnectionInfo, timeout: float) -> tuple[httpx.Client, list[Any]]:
    """An HTTP client for the connection, and the temporary files it needs kept open."""
    keep: list[Any] = []
    verify: ssl.SSLContext | bool = True
    if info.insecure:
        verify = False
    elif info.ca_path or info.ca_data:
        context = ssl.create_default_context()
        if info.ca_path:
            context.load_verify_locations(cafile=str(Path(str(info.ca_path))))
        else:
            data = info.ca_data
            context.load_verify_locations(cadata=data.decode() if isinstance(data, bytes) else data)
        verify = context
    cert_path = info.certificate_path or (
        _materialize(info.certificate_data, ".crt", keep) if info.certificate_data else None
    )
    key_path = info.private_key_path or (
        _materialize(info.private_key_data, ".key", keep) if info.private_key_data else None
    )
    if cert_path and key_path:
        if not isinstance(verify, ssl.SSLContext):
            context = ssl.create_default_context()
            if verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            verify = context
        verify.load_cert_chain(str(cert_path), str(key_path))
    headers = {"Accept": "application/json"}
    auth: httpx.BasicAuth | None = None
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        auth = httpx.BasicAuth(info.username, info.password)
    return httpx.Client(
        base_url=info.server.rstrip("/"),
        verify=verify,
        headers=headers,
        auth=auth,
        timeout=timeout,
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        trust_env=info.trust_env,
    ), keep


class Kube:
    """A synchronous JSON client of the Kubernetes API, safe to share between threads.

    `connect` returns the connection to use; it is called again after a 401 (a rotated
    service-account token) and the request retried once.
    """

    def __init__(
        self, connect: Callable[[], kopf.ConnectionInfo | None], *, timeout: float = 30.0
    ) -> None:
        self._connect = connect
        self._timeout = timeout
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._files: list[Any] = []

    def _session(self, renew: bool = False) -> httpx.Client:
        with self._lock:
            if self._http is None or renew:
                info = self._connect()
                if info is None:
                    raise ApiError(0, "NoCredentials", "no way to reach the Kubernetes API")
                old, self._http = self._http, None
                if old is not None:
                    old.close()
                self._http, self._files = _client(info, self._timeout)
            return self._http

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; the decoded JSON answer. Raises ApiError.

        `body` is serialized as JSON, unless it is bytes (already serialized, e.g. by a caller
        that measured its size).
        """
        content = body if isinstance(body, bytes) else None
        payload = None if isinstance(body, bytes) else body
        for attempt in (1, 2):
            session = self._session(renew=attempt == 2)
            try:
                response = session.request(
                    method,
                    path,
                    json=payload,
                    content=content,
                    params=dict(params or {}),
                    headers={"Content-Type": content_type} if body is not None else None,
                )
            except httpx.HTTPError as error:
                raise ApiError(
                    0, "Unreachable", f"{method} {path}: {type(error).__name__}"
                ) from None
            if response.status_code == 401 and attempt == 1:
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response.json() if response.content else None
        raise AssertionError("unreachable")  # the loop always returns or raises

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = self.request("GET", resource.path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of the collection (of one namespace, or all), page by page."""
        return list(self.iterate(resource, namespace, label_selector=label_selector))

    def iterate(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The objects of the collection, fetched a page at a time."""
        params: dict[str, str] = {"limit": str(_LIST_PAGE)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = self.request("GET", resource.path(namespace), params=params) or {}
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            params["continue"] = token

    def create(self, resource: Resource, namespace: str | None, body: Any) -> dict[str, Any]:
        """Create the object; its stored form. Raises ApiError (409: it already exists)."""
        created: dict[str, Any] = self.request("POST", resource.path(namespace), body=body)
        return created

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any] | bytes,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7396) of the object or its subresource; its stored form."""
        patched: dict[str, Any] = self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch if isinstance(patch, bytes) else dict(patch),
            content_type=MERGE_PATCH,
        )
        return patched

    def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete the object and, in the background, what it owns; False if it was not there."""
        try:
            self.request(
                "DELETE",
                resource.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def close(self) -> None:
        """Close the connections; a later request opens new ones."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None


def _api_error(response: httpx.Response) -> ApiError:
    reason, message = response.reason_phrase or "Error", ""
    try:
        status = response.json()
    except ValueError:
        status = None
    if isinstance(status, dict):
        reason = str(status.get("reason") or reason)
        message = str(status.get("message") or "")
    # kmock and some proxies put tracebacks in `details`; only the message is kept.
    return ApiError(response.status_code, reason, message.splitlines()[0] if message else reason)


def object_key(body: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object."""
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def owner_reference(body: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to `body`, so that Kubernetes deletes the owned object with it."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "controller": controller,
        "blockOwnerDeletion": False,
    }


async def patch_status(
    kube: Kube, resource: Resource, namespace: str, name: str, status: Mapping[str, Any]
) -> bool:
    """Merge-patch an object's status, off the event loop. False when it failed: a 404 (the
    object was deleted meanwhile; its DELETED event follows) quietly, anything else logged."""
    try:
        await asyncio.to_thread(
            kube.patch, resource, namespace, name, {"status": dict(status)}, subresource="status"
        )
    except ApiError as error:
        if error.status != 404:
            logger.warning("%s %s/%s status: %s", resource.kind, namespace, name, error)
        return False
    return True


def object_state(body: Mapping[str, Any]) -> tuple[str, str, Any, dict[str, Any]]:
    """(namespace, name, generation, spec) of an object as the API shows it."""
    namespace, name = object_key(body)
    generation = (body.get("metadata") or {}).get("generation")
    return namespace, name, generation, dict(body.get("spec") or {})


def is_stale(generation: Any, known: Any) -> bool:
    """Whether a copy of generation `generation` is older than the `known` one (a list replayed
    after a newer watch event)."""
    return isinstance(generation, int) and isinstance(known, int) and generation < known
