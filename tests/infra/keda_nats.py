"""KEDA's nats-jetstream scaler, its lookup reproduced in Python to run against real servers.

Both deployments scale the workers with this scaler: the Kubernetes module's ScaledObject
(KEDA from the chart `keda_chart_version` = 2.17.2) and the Cloud Run module's CREMA
autoscaler, which links KEDA's scalers as a library (CREMA image 1.0 = KEDA v2.17, 1.1 =
v2.19, 1.2 = v2.20; GoogleCloudPlatform/cloud-run-external-metrics-autoscaling README,
metric-provider/go.mod). What follows is kedacore/keda `pkg/scalers/nats_jetstream_scaler.go`:

* at tag v2.17.2 (`KedaVersion.V2_17`):
  - L37-51 the trigger metadata (`natsJetStreamMetadata`, parsed by scalersconfig's typed
    config: trimmed, "" is missing, authParams before triggerMetadata where both are named);
  - L145-154 `no account name or id given`; accountID defaults to account;
  - L343-349 the query: `<scheme>://<endpoint>/jsz?acc=<id>&consumers=true&config=true`;
  - L158-266 `getNATSJetstreamMonitoringData`: ask the endpoint (or the cached leader URL);
    when `meta_cluster.cluster_size` > 1 and the consumer's leader is not cached, read the
    endpoint's `/varz`: for each of its `connect_urls`, keep the host (text before the
    first ':'), read `<host>:<endpoint port>/varz` for the server's name and
    `<host>:<endpoint port>/jsz`; with no connect_urls (a server with cluster
    `no_advertise`), for each `cluster.urls` entry take the text before its first '.' as
    the server's name and read `<name>.<endpoint host:port>/jsz`. The first server that
    reports itself leader of the consumer is cached (L268-292); none: `leader node not
    found for consumer <name>` (L263). Any failed request ends the poll (L240-243);
  - L394-403 the lag: the consumer's `num_pending + num_ack_pending`, or, with no such
    consumer, the stream's `last_seq`; L420-436 active when lag > activationLagThreshold,
    and `stream not found` when the cache was dropped.
* at tag v2.20.0 (`KedaVersion.V2_20`, CREMA 1.2): the same, except commit c672a4f2e
  (#7668, "return error when configured consumer is missing": `consumer "<name>" not found
  in stream "<stream>"` instead of last_seq) and 5491778f4 (#7483, the query URL-encoded:
  `acc=%24G&config=true&consumers=true`).

The scaler keeps its cache between polls, as KEDA keeps one scaler per trigger. Where
KEDA dials a name the deployment's DNS answers, `resolve` says which loopback address
answers here (a name missing from it fails like a DNS miss). `desired_replicas` is what
KEDA's scale executor and the HPA (or CREMA) make of the triggers' results at zero replicas.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class KedaVersion(StrEnum):
    V2_17 = "v2.17.2"
    V2_20 = "v2.20.0"


class ScalerError(Exception):
    """An error KEDA's scaler returns for a poll (the trigger is then neither active nor
    counted)."""


@dataclass(frozen=True)
class TriggerMetadata:
    endpoint: str
    account: str
    account_id: str
    stream: str
    consumer: str
    lag_threshold: int = 10
    activation_lag_threshold: int = 0
    use_https: bool = False

    @classmethod
    def parse(
        cls, metadata: Mapping[str, str], auth_params: Mapping[str, str] | None = None
    ) -> TriggerMetadata:
        """`parseNATSJetStreamMetadata`: raises ScalerError with KEDA's messages."""
        auth = dict(auth_params or {})
        errors: list[str] = []

        def value(name: str, order: tuple[str, ...]) -> str | None:
            sources = {"authParams": auth, "triggerMetadata": metadata}
            for source in order:
                found = sources[source].get(name, "").strip()
                if found:
                    return found
            return None

        def required(name: str, order: tuple[str, ...] = ("triggerMetadata",)) -> str:
            found = value(name, order)
            if found is None:
                errors.append(f'missing required parameter "{name}" in [{" ".join(order)}]')
                return ""
            return found

        def integer(name: str, default: int) -> int:
            raw = value(name, ("triggerMetadata",))
            if raw is None:
                return default
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, int) or isinstance(parsed, bool):
                errors.append(f'unable to set param "{name}" value "{raw}"')
                return default
            return parsed

        both = ("authParams", "triggerMetadata")
        account = value("account", both) or ""
        account_id = value("accountID", both) or ""
        stream = required("stream")
        consumer = required("consumer")
        lag = integer("lagThreshold", 10)
        activation = integer("activationLagThreshold", 0)
        https_raw = value("useHttps", ("triggerMetadata",)) or "false"
        use_https = _GO_BOOLS.get(https_raw)
        if use_https is None:
            errors.append(f'unable to parse boolean value "{https_raw}"')
        endpoint = required("natsServerMonitoringEndpoint", both)
        if errors:
            raise ScalerError("error parsing nats metadata: " + "\n".join(errors))
        if not account and not account_id:
            raise ScalerError("no account name or id given")
        return cls(
            endpoint=endpoint,
            account=account,
            account_id=account_id or account,
            stream=stream,
            consumer=consumer,
            lag_threshold=lag,
            activation_lag_threshold=activation,
            use_https=bool(use_https),
        )


# strconv.ParseBool
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def monitoring_url(meta: TriggerMetadata, version: KedaVersion) -> str:
    """`getNATSJetStreamMonitoringURL`."""
    scheme = "https" if meta.use_https else "http"
    if version is KedaVersion.V2_17:
        query = f"acc={meta.account_id}&consumers=true&config=true"
    else:
        query = _go_encode({"acc": meta.account_id, "consumers": "true", "config": "true"})
    return f"{scheme}://{meta.endpoint}/jsz?{query}"


def _go_encode(params: Mapping[str, str]) -> str:
    """url.Values.Encode: keys sorted, QueryEscape'd."""
    return "&".join(
        f"{urllib.parse.quote_plus(k)}={urllib.parse.quote_plus(v)}"
        for k, v in sorted(params.items())
    )


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Metric:
    lag: int
    active: bool


@dataclass
class NatsJetStreamScaler:
    """One trigger's scaler; `poll()` is `GetMetricsAndActivity`."""

    meta: TriggerMetadata
    version: KedaVersion = KedaVersion.V2_17
    # "host:port" as KEDA dials it -> "host:port" that answers it here.
    resolve: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    # The scaler's cache (natsJetStreamMetadata's private fields and `stream`).
    consumer_leader: str = ""
    monitoring_leader_url: str = ""
    cluster_size: int = 0
    stream: dict[str, Any] | None = field(default_factory=dict)
    # Every URL KEDA requested, in order, as KEDA wrote it.
    dialed: list[str] = field(default_factory=list)

    @property
    def monitoring_url(self) -> str:
        return monitoring_url(self.meta, self.version)

    def poll(self) -> Metric:
        self._lookup()
        if self.stream is None:
            raise ScalerError("stream not found")
        lag = self._max_msg_lag()
        return Metric(lag=lag, active=lag > self.meta.activation_lag_threshold)

    # --- getNATSJetstreamMonitoringData ---------------------------------------------------
    def _lookup(self) -> None:
        cached_leader = self.consumer_leader
        url = self.monitoring_leader_url or self.monitoring_url
        found = self._set(self._get(url), "")
        if cached_leader and not found:
            self.consumer_leader, self.monitoring_leader_url, self.stream = "", "", None
        if found and cached_leader and cached_leader == self.consumer_leader:
            return
        if self.cluster_size <= 1:
            return
        varz = self._get(self._server_url(""))
        cluster_urls: list[str] = list(varz.get("connect_urls") or [])
        advertised = bool(cluster_urls)
        if not advertised:
            cluster_urls = list((varz.get("cluster") or {}).get("urls") or [])
        for cluster_url in cluster_urls:
            if advertised:
                host = cluster_url.split(":")[0]
                node = str(self._get(self._server_url(host)).get("server_name") or "")
                node_url = self._node_url(host)
            else:
                node = cluster_url.split(".")[0]
                node_url = self._node_url_by_node(node)
            jsz = self._get(node_url)
            consumer = self._consumer(jsz)
            if consumer is not None and node == (consumer.get("cluster") or {}).get("leader"):
                self._set(jsz, node_url)
                return
        raise ScalerError(f"leader node not found for consumer {self.meta.consumer}")

    def _streams(self, jsz: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            stream
            for account in jsz.get("account_details") or []
            if account.get("id") == self.meta.account_id or account.get("name") == self.meta.account
            for stream in account.get("stream_detail") or []
            if stream.get("name") == self.meta.stream
        ]

    def _consumer(self, jsz: Mapping[str, Any]) -> dict[str, Any] | None:
        for stream in self._streams(jsz):
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") == self.meta.consumer:
                    return dict(consumer)
        return None

    def _set(self, jsz: Mapping[str, Any], leader_url: str) -> bool:
        """`setNATSJetStreamMonitoringData`."""
        self.cluster_size = int((jsz.get("meta_cluster") or {}).get("cluster_size") or 0)
        for stream in self._streams(jsz):
            self.stream = stream
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") == self.meta.consumer:
                    self.consumer_leader = str((consumer.get("cluster") or {}).get("leader") or "")
                    if leader_url:
                        self.monitoring_leader_url = leader_url
                    return True
        return False

    def _max_msg_lag(self) -> int:
        assert self.stream is not None
        for consumer in self.stream.get("consumer_detail") or []:
            if consumer.get("name") == self.meta.consumer:
                return int(consumer.get("num_pending", 0)) + int(consumer.get("num_ack_pending", 0))
        if self.version is KedaVersion.V2_17:
            return int((self.stream.get("state") or {}).get("last_seq", 0))
        raise ScalerError(
            f'consumer "{self.meta.consumer}" not found in stream "{self.meta.stream}"'
        )

    # --- the URLs it builds ---------------------------------------------------------------
    def _parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.monitoring_url)

    def _server_url(self, host: str) -> str:
        """`getNATSJetStreamMonitoringServerURL`: /varz of the endpoint, or of `host` on
        the endpoint's port."""
        parts = self._parts()
        netloc = parts.netloc
        if host:
            netloc = _join_host_port(host, str(parts.port)) if parts.port else host
        return f"{parts.scheme}://{netloc}/varz"

    def _node_query(self) -> str:
        parts = self._parts()
        if self.version is KedaVersion.V2_17:
            return parts.query
        return _go_encode(dict(urllib.parse.parse_qsl(parts.query)))

    def _node_url(self, host: str) -> str:
        """`getNATSJetStreamMonitoringNodeURL`."""
        parts = self._parts()
        netloc = _join_host_port(host, str(parts.port)) if parts.port else host
        return f"{parts.scheme}://{netloc}{parts.path}?{self._node_query()}"

    def _node_url_by_node(self, node: str) -> str:
        """`getNATSJetStreamMonitoringNodeURLByNode`: `<server>.<endpoint>`."""
        parts = self._parts()
        return f"{parts.scheme}://{node}.{parts.netloc}{parts.path}?{self._node_query()}"

    # --- the HTTP client ------------------------------------------------------------------
    def _get(self, url: str) -> dict[str, Any]:
        self.dialed.append(url)
        parts = urllib.parse.urlsplit(url)
        target = self.resolve.get(parts.netloc)
        if target is None:
            raise ScalerError(f'Get "{url}": dial tcp: lookup {parts.hostname}: no such host')
        real = urllib.parse.urlunsplit(parts._replace(netloc=target))
        try:
            with urllib.request.urlopen(real, timeout=self.timeout) as response:
                body: Any = json.load(response)
        except urllib.error.HTTPError as exc:  # Go decodes the body whatever the status
            try:
                body = json.load(exc)
            except ValueError as decode:
                raise ScalerError(f"decoding {url}: {decode}") from exc
        except (OSError, ValueError) as exc:
            raise ScalerError(f'Get "{url}": {exc}') from exc
        return body if isinstance(body, dict) else {}


def desired_replicas(
    results: Sequence[Metric | ScalerError],
    *,
    lag_threshold: int,
    min_replicas: int,
    max_replicas: int,
) -> int:
    """Replicas a ScaledObject at zero replicas gets from its triggers' polls.

    KEDA (pkg/scaling/executor/scale_scaledobjects.go, v2.17.2, `RequestScale`): the object
    is active when any trigger is; a trigger that errors is neither active nor counted
    ("Triggers defined in ScaledObject are not working correctly", Ready=False) and, with
    no fallback, nothing scales from zero. Active: the HPA (and CREMA's
    TargetAverageValueScaling) takes the largest ceil(lag / lagThreshold), within
    [max(min, 1), max].
    """
    metrics = [result for result in results if isinstance(result, Metric)]
    if not any(metric.active for metric in metrics):
        return min_replicas
    wanted = max(math.ceil(metric.lag / lag_threshold) for metric in metrics)
    return max(max(min_replicas, 1), min(wanted, max_replicas))
