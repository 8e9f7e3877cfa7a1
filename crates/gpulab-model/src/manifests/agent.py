#!/usr/bin/env python3
"""gpulab's autostop agent: runs in its own small pod in the lab's cluster.

Every 30 s it reads the lab's settings, observes the lab's size, keeps a spend ledger, polls the
workspace's activity reporter (activity.py), warns the user, and stops the lab (GPU nodes or workspace
replicas to 0) when it has been idle for the configured period or its budget is spent. It holds the
only credentials involved, so a lab its user forgot stops without the laptop online. Standard library
only (Python >= 3.8): it runs on the stock python:3.12-slim image with no packages installed.

Where the behaviour comes from:
- EKS API (REST-JSON), the only two AWS calls it makes:
  DescribeNodegroup, `GET /clusters/{name}/node-groups/{nodegroupName}`
  (https://docs.aws.amazon.com/eks/latest/APIReference/API_DescribeNodegroup.html) and
  UpdateNodegroupConfig, `POST /clusters/{name}/node-groups/{nodegroupName}/update-config`
  (https://docs.aws.amazon.com/eks/latest/APIReference/API_UpdateNodegroupConfig.html).
- AWS credentials: the environment, else EKS Pod Identity's container credentials endpoint,
  `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
  (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html,
  https://docs.aws.amazon.com/sdkref/latest/guide/feature-container-credentials.html).
- Signature Version 4, signed by hand with hmac/hashlib
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).
- Kubernetes: in-cluster access with the service account token and CA
  (https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/); a StatefulSet's `scale`
  subresource, an autoscaling/v1 Scale whose `spec.replicas` is omitted when 0
  (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/stateful-set-v1/#get-read-scale-of-the-specified-statefulset,
  https://kubernetes.io/docs/reference/kubernetes-api/autoscaling-resources/scale-v1/); JSON merge
  patches (RFC 7386, `application/merge-patch+json`) on it and on the state ConfigMap.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol, Tuple

DEFAULT_SETTINGS = "/etc/gpulab/autostop/settings.json"
DEFAULT_TOKEN_FILE = "/etc/gpulab/activity/token"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
HTTP_TIMEOUT = 10.0
NOTICE_TIMEOUT = 5.0
# Refresh container credentials this long before they expire.
CREDENTIALS_MARGIN = 300.0
STATE_VERSION = 1


class SettingsError(Exception):
    """The settings file is missing or invalid: nothing sound can be done this tick."""


class ApiError(Exception):
    """An HTTP API answered with an error status (`status`) or could not be reached (`status` None)."""

    def __init__(self, status: Optional[int], message: str) -> None:
        super().__init__(message)
        self.status = status


# -- small helpers -------------------------------------------------------------------------------


def http_request(method: str, url: str, headers: Mapping[str, str], body: Optional[bytes] = None,
                 timeout: float = HTTP_TIMEOUT,
                 context: Optional[ssl.SSLContext] = None) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP request: (status, headers, body) for any status; ApiError(None) when unreachable."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()) if e.headers else {}, e.read()
    except urllib.error.URLError as e:
        raise ApiError(None, f"{method} {url}: {e.reason}") from e
    except OSError as e:  # timeouts, resets
        raise ApiError(None, f"{method} {url}: {e}") from e


def format_duration(seconds: float) -> str:
    """`30m`, `1h 30m`, `2h`: what the texts say."""
    minutes = max(0, int(round(seconds / 60.0)))
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours}h {minutes}m"
    if hours:
        return f"{hours}h"
    return f"{minutes}m"


def format_utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def parse_iso8601(text: str) -> float:
    """Epoch seconds of `2024-12-05T07:40:44Z` (Pod Identity's Expiration); Python 3.8's fromisoformat
    takes no `Z`."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


# -- settings ------------------------------------------------------------------------------------


class Settings(NamedTuple):
    lab: str
    lab_id: str
    idle_seconds: Optional[float]
    budget_usd: Optional[float]
    idle_per_hour: float
    node_per_hour: float
    gpu_busy_percent: float
    warn_seconds: float
    spent_usd: float
    spent_at: Optional[float]
    target: Dict[str, str]
    activity_url: str
    state_namespace: str
    state_name: str


def load_settings(path: str) -> Settings:
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise SettingsError(f"reading the settings {path}: {e}") from e
    try:
        def number(key: str, default: Optional[float]) -> Optional[float]:
            value = raw.get(key, default)
            return None if value is None else float(value)

        target = raw["target"]
        kind = target["kind"]
        if kind == "eks-nodegroup":
            for key in ("region", "cluster", "nodegroup"):
                if not isinstance(target[key], str):
                    raise ValueError(f"target.{key} must be a string")
        elif kind == "statefulset":
            for key in ("namespace", "name"):
                if not isinstance(target[key], str):
                    raise ValueError(f"target.{key} must be a string")
        else:
            raise ValueError(f"unknown target kind {kind!r}")
        return Settings(
            lab=str(raw.get("lab") or "lab"),
            lab_id=str(raw["lab_id"]),
            idle_seconds=number("idle_seconds", None),
            budget_usd=number("budget_usd", None),
            idle_per_hour=number("idle_per_hour", 0.0) or 0.0,
            node_per_hour=number("node_per_hour", 0.0) or 0.0,
            gpu_busy_percent=number("gpu_busy_percent", 10.0) or 0.0,
            warn_seconds=number("warn_seconds", 300.0) or 0.0,
            spent_usd=number("spent_usd", 0.0) or 0.0,
            spent_at=number("spent_at", None),
            target=dict(target),
            activity_url=str(raw["activity_url"]).rstrip("/"),
            state_namespace=str(raw["state"]["namespace"]),
            state_name=str(raw["state"]["name"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SettingsError(f"invalid settings {path}: {e!r}") from e


# -- Kubernetes ----------------------------------------------------------------------------------


class Kube:
    """The Kubernetes API: `GPULAB_KUBE_URL` (tests, plain http), else in-cluster with the service
    account's token, re-read per request because kubelet rotates it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        explicit = env.get("GPULAB_KUBE_URL")
        self.in_cluster = not explicit
        if explicit:
            self.base = explicit.rstrip("/")
        else:
            host = env.get("KUBERNETES_SERVICE_HOST", "")
            port = env.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ApiError(None, "not in a cluster: KUBERNETES_SERVICE_HOST is unset "
                                     "(and GPULAB_KUBE_URL too)")
            if ":" in host:
                host = f"[{host}]"  # an IPv6 cluster
            self.base = f"https://{host}:{port}"

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        headers = {"Accept": "application/json"}
        try:
            with open(os.path.join(SA_DIR, "token")) as f:
                headers["Authorization"] = "Bearer " + f.read().strip()
        except OSError as e:
            if self.in_cluster:
                raise ApiError(None, f"reading the service account token: {e}") from e
        context = None
        if self.in_cluster:
            try:
                context = ssl.create_default_context(cafile=os.path.join(SA_DIR, "ca.crt"))
            except (OSError, ssl.SSLError) as e:
                raise ApiError(None, f"reading the cluster CA: {e}") from e
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json"
        status, _, text = http_request(method, self.base + path, headers, data, context=context)
        if status >= 300:
            message = text.decode("utf-8", "replace").strip()
            try:
                message = json.loads(text).get("message") or message
            except (ValueError, AttributeError):
                pass
            raise ApiError(status, f"{method} {path}: HTTP {status}: {message[:300]}")
        try:
            return json.loads(text) if text else {}
        except ValueError as e:
            raise ApiError(status, f"{method} {path}: not JSON: {e}") from e


# -- AWS: credentials, SigV4, EKS ----------------------------------------------------------------


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: Optional[str]


class CredentialSource:
    """The environment's keys, else EKS Pod Identity's endpoint (cached until 5 minutes before they
    expire)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.cached: Optional[Credentials] = None
        self.refresh_at = 0.0

    def get(self) -> Credentials:
        key, secret = self.env.get("AWS_ACCESS_KEY_ID"), self.env.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            return Credentials(key, secret, self.env.get("AWS_SESSION_TOKEN") or None)
        if self.cached is not None and time.time() < self.refresh_at:
            return self.cached
        uri = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        if not uri:
            raise ApiError(None, "no AWS credentials: neither AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                 "nor AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity) is set")
        headers = {"Accept": "application/json"}
        token_file = self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        try:
            if token_file:
                with open(token_file) as f:  # re-read: the projected token is rotated
                    headers["Authorization"] = f.read().strip()
            elif self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
                headers["Authorization"] = self.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        except OSError as e:
            raise ApiError(None, f"reading the Pod Identity token: {e}") from e
        status, _, body = http_request("GET", uri, headers)
        if status != 200:
            raise ApiError(status, f"Pod Identity credentials: HTTP {status}: "
                                   f"{body.decode('utf-8', 'replace')[:300]}")
        try:
            doc = json.loads(body)
            creds = Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token"))
            expires = parse_iso8601(doc["Expiration"]) if doc.get("Expiration") else time.time() + 900
        except (ValueError, KeyError, TypeError) as e:
            raise ApiError(status, f"Pod Identity credentials: unexpected answer: {e!r}") from e
        self.cached, self.refresh_at = creds, expires - CREDENTIALS_MARGIN
        return creds


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def sigv4_headers(method: str, url: str, headers: Mapping[str, str], body: bytes, creds: Credentials,
                  region: str, service: str, amz_date: str) -> Dict[str, str]:
    """The headers to send (the given ones plus Host, X-Amz-Date, X-Amz-Security-Token and
    Authorization) for a SigV4-signed request; `amz_date` is `YYYYMMDDTHHMMSSZ`."""
    parts = urllib.parse.urlsplit(url)
    out = dict(headers)
    out["Host"] = parts.netloc
    out["X-Amz-Date"] = amz_date
    if creds.token:
        out["X-Amz-Security-Token"] = creds.token
    # Canonical URI: every service but S3 URI-encodes the (already encoded) path once more.
    canonical_uri = urllib.parse.quote(parts.path or "/", safe="/-_.~")
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((urllib.parse.quote(k, safe="-_.~"),
                                       urllib.parse.quote(v, safe="-_.~")) for k, v in pairs))
    lowered: Dict[str, str] = {}
    for name, value in out.items():
        lowered[name.lower()] = " ".join(str(value).strip().split())
    signed = ";".join(sorted(lowered))
    canonical_headers = "".join(f"{n}:{lowered[n]}\n" for n in sorted(lowered))
    canonical_request = "\n".join([method.upper(), canonical_uri, canonical_query, canonical_headers,
                                   signed, _sha256(body)])
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                _sha256(canonical_request.encode("utf-8"))])
    signature = hmac.new(signing_key(creds.secret_key, date, region, service),
                         string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                            f"SignedHeaders={signed}, Signature={signature}")
    return out


class Eks:
    """The EKS REST-JSON API, signed with SigV4 (service `eks`)."""

    def __init__(self, region: str, env: Mapping[str, str], credentials: CredentialSource) -> None:
        self.region = region
        self.endpoint = (env.get("AWS_ENDPOINT_URL_EKS") or f"https://eks.{region}.amazonaws.com").rstrip("/")
        self.credentials = credentials

    def call(self, operation: str, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.endpoint + path
        # Sign with the real clock, never the tick's `--now`: AWS refuses a skew over 5 minutes.
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        signed = sigv4_headers(method, url, headers, data, self.credentials.get(), self.region, "eks",
                               amz_date)
        status, resp_headers, text = http_request(method, url, signed, data if body is not None else None)
        if status >= 300:
            code, message = "", text.decode("utf-8", "replace").strip()
            try:
                doc = json.loads(text)
                code = str(doc.get("__type") or "")
                message = str(doc.get("message") or doc.get("Message") or message)
            except (ValueError, AttributeError):
                pass
            lowered = {k.lower(): v for k, v in resp_headers.items()}
            code = (lowered.get("x-amzn-errortype") or code).split(":")[0].split("#")[-1]
            raise ApiError(status, f"EKS {operation}: HTTP {status} {code}: {message[:300]}".rstrip())
        try:
            return json.loads(text) if text else {}
        except ValueError as e:
            raise ApiError(status, f"EKS {operation}: not JSON: {e}") from e

    @staticmethod
    def _path(cluster: str, nodegroup: str) -> str:
        q = urllib.parse.quote
        return f"/clusters/{q(cluster, safe='')}/node-groups/{q(nodegroup, safe='')}"

    def describe_nodegroup(self, cluster: str, nodegroup: str) -> Dict[str, Any]:
        """The node group: its scalingConfig {minSize, maxSize, desiredSize}, its tags, ..."""
        answer = self.call("DescribeNodegroup", "GET", self._path(cluster, nodegroup))
        group: Dict[str, Any] = answer["nodegroup"]
        return group

    def update_nodegroup_config(self, cluster: str, nodegroup: str, min_size: int, max_size: int,
                                desired_size: int) -> Any:
        return self.call("UpdateNodegroupConfig", "POST", self._path(cluster, nodegroup) + "/update-config", {
            "scalingConfig": {"minSize": min_size, "maxSize": max_size, "desiredSize": desired_size},
            # EKS's idempotency token for this one update (each stop is a new one).
            "clientRequestToken": str(uuid.uuid4()),
        })


# -- targets -------------------------------------------------------------------------------------


class Target(Protocol):
    """What the agent observes and scales to 0."""

    name: str

    def observe(self) -> int: ...

    def scale_to_zero(self) -> None: ...


# The tag gpulab puts on everything a lab makes (naming.rs, LAB_ID_KEY).
LAB_ID_TAG = "gpulab.io/lab-id"


class NodegroupTarget:
    def __init__(self, eks: Eks, cluster: str, nodegroup: str, lab_id: str) -> None:
        self.eks, self.cluster, self.nodegroup, self.lab_id = eks, cluster, nodegroup, lab_id
        self.name = f"node group {cluster}/{nodegroup}"

    def observe(self) -> int:
        return int(self.eks.describe_nodegroup(self.cluster, self.nodegroup)["scalingConfig"]["desiredSize"])

    def scale_to_zero(self) -> None:
        group = self.eks.describe_nodegroup(self.cluster, self.nodegroup)
        # Only the lab's own node group: one of that name without the lab's ID is never resized.
        tag = (group.get("tags") or {}).get(LAB_ID_TAG)
        if tag != self.lab_id:
            raise ApiError(None, f"{self.name} does not carry {LAB_ID_TAG}={self.lab_id} (it has {tag!r}): "
                                 "not this lab's, left alone")
        # Keep maxSize as it is (EKS requires maxSize >= 1); minSize must drop to 0 for desiredSize 0.
        config = group["scalingConfig"]
        self.eks.update_nodegroup_config(self.cluster, self.nodegroup, 0, int(config["maxSize"]), 0)


class StatefulSetTarget:
    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale"
        self.name = f"StatefulSet {namespace}/{name}"

    def observe(self) -> int:
        scale = self.kube.request("GET", self.path)
        # autoscaling/v1 Scale omits spec.replicas when it is 0.
        return int((scale.get("spec") or {}).get("replicas") or 0)

    def scale_to_zero(self) -> None:
        self.kube.request("PATCH", self.path, {"spec": {"replicas": 0}})


# -- the agent -----------------------------------------------------------------------------------


def fresh_state(settings: Settings, now: int) -> Dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "updated_at": now,
        "nodes": None,  # unknown until observed; accounted as 1
        "last_active": now,
        "active": [],
        "stop_at": None,
        "spent_usd": settings.spent_usd,
        "spent_at": int(settings.spent_at) if settings.spent_at is not None else now,
        "budget_warned": False,
        "idle_warned_for": None,
        "stopped": None,
        "workspace_started_at": None,
        "seen_stopped_since_start": False,
        "disruptions": 0,
        "last_error": None,
    }


def what_stops(settings: Settings) -> str:
    if settings.target["kind"] == "eks-nodegroup":
        return "its GPU nodes go to 0"
    return "the workspace is scaled to 0"


def parse_state(loaded: Any, settings: Settings, now: int) -> Dict[str, Any]:
    """The stored state, or a fresh one when it is absent, of another version, or malformed."""
    state = fresh_state(settings, now)
    if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
        return state
    state.update(loaded)  # a key a later version added keeps its default
    number = (int, float)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    sane = (all(isinstance(state[k], number) and not isinstance(state[k], bool)
                for k in ("last_active", "spent_usd", "spent_at", "disruptions"))
            and (state["nodes"] is None or is_int(state["nodes"]))
            and (state["stopped"] is None or isinstance(state["stopped"], dict))
            and isinstance(state["active"], list))
    return state if sane else fresh_state(settings, now)


def activity_reasons(report: Mapping[str, Any], gpu_busy_percent: float) -> List[str]:
    """Why the report counts as activity, in words; [] when idle."""
    def count(key: str) -> int:
        try:
            return int(report.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    reasons: List[str] = []
    for key, one, many in (("ssh_sessions", "SSH session", "SSH sessions"),
                           ("busy_kernels", "busy Jupyter kernel", "busy Jupyter kernels"),
                           ("slurm_jobs", "Slurm job", "Slurm jobs"),
                           ("vllm_requests", "vLLM request", "vLLM requests"),
                           ("gpu_processes", "GPU process", "GPU processes")):
        n = count(key)
        if n > 0:
            reasons.append(plural(n, one, many))
    util = report.get("gpu_utilization")
    if isinstance(util, (int, float)) and not isinstance(util, bool) and util >= gpu_busy_percent:
        reasons.append(f"GPU {util:.0f}% busy")
    return reasons


class Agent:
    """One agent: the tick logic, plus the state kept in memory when the ConfigMap cannot be used."""

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.credentials = CredentialSource(self.env)
        self.memory_state: Optional[Dict[str, Any]] = None
        self.last_summary = ""

    # The pieces of one tick.

    def _target(self, settings: Settings, kube: Optional[Kube]) -> Target:
        t = settings.target
        if t["kind"] == "eks-nodegroup":
            return NodegroupTarget(Eks(t["region"], self.env, self.credentials), t["cluster"], t["nodegroup"],
                                   settings.lab_id)
        if kube is None:
            raise ApiError(None, "no Kubernetes API")
        return StatefulSetTarget(kube, t["namespace"], t["name"])

    def _state_path(self, settings: Settings) -> str:
        return f"/api/v1/namespaces/{settings.state_namespace}/configmaps/{settings.state_name}"

    def _load_state(self, kube: Optional[Kube], settings: Settings, now: int,
                    errors: List[str]) -> Tuple[Dict[str, Any], bool]:
        """The state, and whether its ConfigMap is missing."""
        fallback = copy.deepcopy(self.memory_state) if self.memory_state else fresh_state(settings, now)
        if kube is None:
            return fallback, False
        try:
            cm = kube.request("GET", self._state_path(settings))
        except ApiError as e:
            if e.status == 404:
                errors.append(f"state ConfigMap {settings.state_namespace}/{settings.state_name} "
                              "not found: the state is kept in memory only")
                return fallback, True
            errors.append(f"reading the state: {e}")
            return fallback, False
        text = (cm.get("data") or {}).get("state.json") if isinstance(cm, dict) else None
        try:
            loaded = json.loads(text) if text else None
        except ValueError:
            loaded = None
        return parse_state(loaded, settings, now), False

    def _save_state(self, kube: Optional[Kube], settings: Settings, state: Dict[str, Any],
                    missing: bool, errors: List[str]) -> None:
        if kube is not None:
            try:
                kube.request("PATCH", self._state_path(settings),
                             {"data": {"state.json": json.dumps(state, sort_keys=True)}})
            except ApiError as e:
                if not (e.status == 404 and missing):  # already said
                    errors.append(f"writing the state: {e}")
                    state["last_error"] = "; ".join(errors)
        self.memory_state = copy.deepcopy(state)

    def _token(self, errors: List[str]) -> Optional[str]:
        path = self.env.get("GPULAB_ACTIVITY_TOKEN_FILE") or DEFAULT_TOKEN_FILE
        try:
            with open(path) as f:
                token = f.read().strip()
        except OSError as e:
            errors.append(f"reading the activity token: {e}")
            return None
        if not token:
            errors.append(f"the activity token {path} is empty")
            return None
        return token

    def _activity(self, settings: Settings, token: Optional[str]) -> Dict[str, Any]:
        if token is None:
            raise ApiError(None, "no activity token")
        status, _, body = http_request("GET", settings.activity_url + "/activity",
                                       {"Authorization": "Bearer " + token, "Accept": "application/json"})
        if status != 200:
            raise ApiError(status, f"HTTP {status}")
        report = json.loads(body)
        if not isinstance(report, dict):
            raise ApiError(status, "the report is not a JSON object")
        return report

    def _notice(self, settings: Settings, token: Optional[str], kind: str, text: str,
                did: List[str]) -> None:
        """Best effort: a notice that cannot be shown must not keep a lab running."""
        if token is None:
            did.append(f"notice {kind} not sent (no activity token)")
            return
        data = json.dumps({"kind": kind, "text": text}).encode()
        try:
            status, _, _ = http_request("POST", settings.activity_url + "/notice",
                                        {"Authorization": "Bearer " + token,
                                         "Content-Type": "application/json"}, data, timeout=NOTICE_TIMEOUT)
        except ApiError as e:
            did.append(f"notice {kind} failed: {e}")
            return
        did.append(f"notice {kind} sent" if status < 300 else f"notice {kind} failed: HTTP {status}")

    # One tick.

    def tick(self, now: Optional[float] = None) -> Dict[str, Any]:
        """One tick at `now` (epoch seconds): the new state. Raises SettingsError only."""
        t = int(time.time() if now is None else now)
        settings = load_settings(self.env.get("GPULAB_AUTOSTOP_SETTINGS") or DEFAULT_SETTINGS)
        errors: List[str] = []
        did: List[str] = []
        token = self._token(errors)
        kube: Optional[Kube]
        try:
            kube = Kube(self.env)
        except ApiError as e:
            errors.append(f"Kubernetes: {e}")
            kube = None
        state, missing = self._load_state(kube, settings, t, errors)

        # 2. Observe the lab's size.
        observed: Optional[int] = None
        target: Optional[Target] = None
        try:
            target = self._target(settings, kube)
            observed = target.observe()
        except (ApiError, KeyError, TypeError, ValueError) as e:
            errors.append(f"observing the {target.name if target else 'target'}: {e}")

        # 3. The ledger: the last interval is charged at the size seen at its start.
        previous = state["nodes"] if isinstance(state["nodes"], int) else 1
        elapsed = max(0, t - int(state["spent_at"]))
        rate = settings.idle_per_hour + settings.node_per_hour * previous
        state["spent_usd"] = float(state["spent_usd"]) + rate * elapsed / 3600.0
        state["spent_at"] = max(int(state["spent_at"]), t)
        if observed is not None:
            state["nodes"] = observed

        # 4. Started again after a stop.
        if state["stopped"] is not None and observed is not None and observed > 0:
            did.append("the lab was started again")
            state["stopped"] = None
            state["last_active"] = t
            state["idle_warned_for"] = None

        if observed == 0:
            # 5. Stopped (by the agent or by `gpulab stop`): nothing to watch, nothing to spend on nodes.
            state["stop_at"] = None
            state["last_active"] = t
            state["active"] = []
            state["seen_stopped_since_start"] = True
        else:
            self._watch(settings, state, token, target, t, errors, did)

        state["updated_at"] = t
        state["last_error"] = "; ".join(errors) if errors else None
        self._save_state(kube, settings, state, missing, errors)
        self.last_summary = self._summary(state, did, errors)
        return state

    def _watch(self, settings: Settings, state: Dict[str, Any], token: Optional[str],
               target: Optional[Target], t: int, errors: List[str], did: List[str]) -> None:
        """Steps 6 to 9: activity, budget, idle, stop."""
        # 6. Activity. A reporter that cannot be read counts as idle: a broken workspace must not keep
        # a GPU node on forever.
        reasons: List[str] = []
        try:
            report = self._activity(settings, token)
        except (ApiError, ValueError) as e:
            errors.append(f"activity reporter {settings.activity_url}: {e}")
            report = None
        if report is not None:
            reasons = activity_reasons(report, settings.gpu_busy_percent)
            if reasons:
                state["last_active"] = t
            jupyter = report.get("jupyter_last_activity")
            if isinstance(jupyter, (int, float)) and not isinstance(jupyter, bool) \
                    and jupyter > state["last_active"]:
                # Someone typing in a notebook; never later than now (a skewed workspace clock).
                state["last_active"] = min(int(jupyter), t)
            started = report.get("started_at")
            if isinstance(started, int) and not isinstance(started, bool):
                previous = state["workspace_started_at"]
                if started != previous and previous is not None and not state["seen_stopped_since_start"]:
                    state["disruptions"] = int(state["disruptions"]) + 1
                    did.append("the workspace restarted while the lab ran (a disruption)")
                state["workspace_started_at"] = started
                state["seen_stopped_since_start"] = False
        state["active"] = reasons

        stopping = False
        # 7. Budget.
        budget = settings.budget_usd
        if budget is not None and state["stopped"] is None:
            spent = float(state["spent_usd"])
            if spent >= budget:
                stopping = True
                self._stop(settings, state, token, target, t, "budget",
                           f"spent ${spent:.2f} of a ${budget:.2f} budget", errors, did)
            elif spent >= 0.8 * budget:
                if not state["budget_warned"]:
                    self._notice(settings, token, "budget", self._budget_text(settings, state), did)
                    state["budget_warned"] = True
            elif state["budget_warned"]:
                state["budget_warned"] = False  # the budget was raised: warn again at its 80 %

        # 8. Idle.
        if settings.idle_seconds is None or state["stopped"] is not None:
            state["stop_at"] = None
        else:
            stop_at = int(state["last_active"] + settings.idle_seconds)
            state["stop_at"] = stop_at
            if stopping:
                pass  # the budget stop was tried this tick
            elif t >= stop_at:
                idle_for = format_duration(t - state["last_active"])
                self._stop(settings, state, token, target, t, "idle", f"idle for {idle_for}", errors, did)
            elif t >= stop_at - settings.warn_seconds and state["idle_warned_for"] != state["last_active"]:
                self._notice(settings, token, "autostop", self._idle_text(settings, state, t), did)
                state["idle_warned_for"] = state["last_active"]

    def _stop(self, settings: Settings, state: Dict[str, Any], token: Optional[str],
              target: Optional[Target], t: int, reason: str, message: str, errors: List[str],
              did: List[str]) -> None:
        """9. Tell the user first (best effort), then scale the target to 0."""
        what = what_stops(settings)
        self._notice(settings, token, "stopping",
                     f"gpulab: stopping lab {settings.lab} now: {message}. {what[:1].upper() + what[1:]}; "
                     f"/workspace is kept. `gpulab start {settings.lab}` brings it back.", did)
        if target is None:
            errors.append(f"stopping the lab ({reason}): no target")
            return
        try:
            target.scale_to_zero()
        except (ApiError, KeyError, TypeError, ValueError) as e:
            errors.append(f"stopping the lab ({reason}): {e}")
            return
        did.append(f"stopped the lab ({message})")
        state["stopped"] = {"at": t, "reason": reason, "message": message}
        state["nodes"] = 0
        state["stop_at"] = None

    @staticmethod
    def _budget_text(settings: Settings, state: Dict[str, Any]) -> str:
        spent, budget = float(state["spent_usd"]), float(settings.budget_usd or 0.0)
        nodes = state["nodes"] if isinstance(state["nodes"], int) else 1
        rate = settings.idle_per_hour + settings.node_per_hour * nodes
        left = max(0.0, budget - spent)
        when = f" (in about {format_duration(left / rate * 3600)} at ${rate:.2f}/h)" if rate > 0 else ""
        return (f"gpulab: lab {settings.lab} has spent ${spent:.2f} of its ${budget:.2f} budget. At "
                f"${budget:.2f}{when} gpulab stops it: {what_stops(settings)}; /workspace is kept.")

    @staticmethod
    def _idle_text(settings: Settings, state: Dict[str, Any], t: int) -> str:
        last, stop_at = state["last_active"], state["stop_at"]
        busy = settings.gpu_busy_percent
        return (f"gpulab: lab {settings.lab} has been idle since {format_utc(last)} "
                f"({format_duration(t - last)}). It stops at {format_utc(stop_at)} (in "
                f"{format_duration(stop_at - t)}) unless there is activity: an SSH session, a busy Jupyter "
                f"kernel or notebook use, a Slurm job, a vLLM request, a GPU process, or a GPU at least "
                f"{busy:g}% busy. `gpulab autostop {settings.lab} off` turns autostop off.")

    @staticmethod
    def _summary(state: Dict[str, Any], did: List[str], errors: List[str]) -> str:
        parts = [f"nodes={state['nodes']}",
                 "active=" + (", ".join(state["active"]) if state["active"] else "none"),
                 f"last_active={format_utc(state['last_active'])}",
                 f"stop_at={format_utc(state['stop_at']) if state['stop_at'] else 'none'}",
                 f"spent=${float(state['spent_usd']):.2f}"]
        if state["stopped"]:
            parts.append(f"stopped={state['stopped']['reason']}")
        if did:
            parts.append("did: " + "; ".join(did))
        if errors:
            parts.append("errors: " + "; ".join(errors))
        return " ".join(parts)


def run(agent: Agent, interval: float, out: Callable[[str], None]) -> None:
    """Tick forever; an error is logged, never fatal."""
    while True:
        started = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        try:
            agent.tick(started)
            out(f"{stamp} {agent.last_summary}")
        except Exception as e:  # noqa: BLE001 - the agent must keep going
            out(f"{stamp} error: {e}")
        time.sleep(max(1.0, interval - (time.time() - started)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="tick forever")
    r.add_argument("--interval", type=float, default=30.0)
    k = sub.add_parser("tick", help="one tick; print the new state")
    k.add_argument("--now", type=float, default=None, help="epoch seconds (default: the clock)")
    args = parser.parse_args(argv)
    agent = Agent()
    if args.command == "run":
        run(agent, args.interval, lambda line: print(line, flush=True))
        return 0
    try:
        state = agent.tick(args.now)
    except SettingsError as e:
        sys.stderr.write(f"agent: {e}\n")
        return 1
    sys.stderr.write(agent.last_summary + "\n")
    print(json.dumps(state, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
