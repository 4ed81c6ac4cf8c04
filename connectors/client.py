"""A small client for the Kafka Connect REST API: the operator's view of one connector.

Every call goes to the one base URL (any worker of the cluster: they forward to the leader).
While the cluster rebalances, Connect answers 409 (or 500 "a rebalance is expected"); the client retries those for
``conflict_retry_s`` seconds before it gives up. Messages from Connect are scrubbed of the
secret values of the configs this client has sent before they reach an exception or a log line.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import quote

import requests
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_exponential

from connectors.config import is_secret_key, scrub
from connectors.errors import (
    ConfigInvalid,
    ConnectorFailed,
    ConnectorNotFound,
    ConnectorTimeout,
    ConnectRestError,
)

log = logging.getLogger(__name__)

ApplyResult = Literal["created", "updated", "unchanged"]
TRACE_LINES = 25


class ConnectClient:
    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        conflict_retry_s: float = 30.0,
        secrets: Iterable[str] = (),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.conflict_retry_s = conflict_retry_s
        self._secrets: set[str] = {s for s in secrets if s}
        self._http = session or requests.Session()

    # ------------------------------------------------------------------------------ plumbing
    def _remember_secrets(self, config: Mapping[str, str]) -> None:
        self._secrets.update(v for k, v in config.items() if is_secret_key(k) and v)

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = self.base_url + path

        def send() -> requests.Response:
            try:
                return self._http.request(method, url, json=body, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                raise ConnectRestError(method, path, None, f"cannot reach Kafka Connect at {self.base_url}: {exc}") from exc

        def again(state: RetryCallState) -> None:
            resp = state.outcome.result() if state.outcome is not None else None
            if resp is not None:
                log.debug("%s %s: %d (%s), retrying", method, path, resp.status_code, self._message(resp))

        # 409: a rebalance is in progress or this worker's view of the configs is stale. 500 "a
        # rebalance is expected" (RebalanceNeededException, e.g. right after a config change) is
        # the same transient state under another status code. Past conflict_retry_s the last
        # answer stands (and is raised below).
        resp: requests.Response = Retrying(
            retry=retry_if_result(_rebalancing), stop=stop_after_delay(self.conflict_retry_s),
            wait=wait_exponential(multiplier=0.25, max=2.0), before_sleep=again,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome is not None else None,
        )(send)
        if resp.status_code >= 400:
            error = ConnectorNotFound if resp.status_code == 404 else ConnectRestError
            raise error(method, path, resp.status_code, self._message(resp))
        return resp

    def _message(self, resp: requests.Response) -> str:
        try:
            data = resp.json()
            text = str(data.get("message") or data) if isinstance(data, dict) else str(data)
        except ValueError:
            text = resp.text.strip() or resp.reason
        return scrub(text, self._secrets)

    @staticmethod
    def _path(name: str) -> str:
        return "/connectors/" + quote(name, safe="")

    # ---------------------------------------------------------------------------- operations
    def list(self) -> list[str]:
        """Names of the connectors on the cluster."""
        return sorted(self._request("GET", "/connectors").json())

    def get_config(self, name: str) -> dict[str, str] | None:
        """The connector's stored config (it holds secrets: mask before showing), None if absent."""
        try:
            return dict(self._request("GET", self._path(name) + "/config").json())
        except ConnectorNotFound:
            return None

    # ``list`` is a method of this class: annotations below say ``builtins.list``.
    def validate(self, config: Mapping[str, str], name: str | None = None) -> builtins.list[str]:
        """Ask the connector plugin to validate ``config``; returns its errors as ``key: message``."""
        self._remember_secrets(config)
        cls = config.get("connector.class")
        if not cls:
            return ["connector.class: missing"]
        body = {**config, "name": config.get("name") or name or "validate"}
        data = self._request("PUT", f"/connector-plugins/{quote(cls, safe='')}/config/validate", body).json()
        errors: builtins.list[str] = []
        if not data.get("error_count"):
            return errors
        for item in data.get("configs", []):
            value = item.get("value", {})
            for message in value.get("errors") or []:
                errors.append(f"{value.get('name')}: {scrub(str(message), self._secrets)}")
        return errors or [f"{data.get('error_count')} error(s) reported without details"]

    def apply(self, name: str, config: Mapping[str, str], validate: bool = True) -> ApplyResult:
        """Create or update connector ``name`` so its config equals ``config``; idempotent.

        Validates first (raises :class:`ConfigInvalid` listing every error), then compares with the
        stored config and PUTs only on a difference. Does not wait for RUNNING: see :meth:`wait_running`.
        """
        desired = {k: str(v) for k, v in config.items() if k != "name"}
        self._remember_secrets(desired)
        if validate:
            errors = self.validate(desired, name=name)
            if errors:
                raise ConfigInvalid(desired.get("connector.class", "?"), errors)
        current = self.get_config(name)
        if current is not None and {k: v for k, v in current.items() if k != "name"} == desired:
            log.info("connector %s: unchanged", name)
            return "unchanged"
        resp = self._request("PUT", self._path(name) + "/config", {**desired, "name": name})
        result: ApplyResult = "created" if resp.status_code == 201 else "updated"
        log.info("connector %s: %s", name, result)
        return result

    def status(self, name: str) -> dict[str, Any]:
        """Connect's status document: ``{"connector": {"state", "worker_id"}, "tasks": [...]}``."""
        return dict(self._request("GET", self._path(name) + "/status").json())

    def wait_running(self, name: str, timeout: float = 60.0, interval: float = 0.25) -> dict[str, Any]:
        """Wait until the connector and all its tasks are RUNNING; returns the last status.

        Raises :class:`ConnectorFailed` (with Connect's trace) as soon as the connector or a task is
        FAILED, and :class:`ConnectorTimeout` (with the last state seen) after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no status yet"
        while True:
            try:
                st = self.status(name)
            except ConnectorNotFound:
                st = None  # just created: the status topic may not have caught up yet
            if st is not None:
                last = st
                check_failed(name, st, self._secrets)
                tasks = st.get("tasks") or []
                if st.get("connector", {}).get("state") == "RUNNING" and tasks and all(
                    t.get("state") == "RUNNING" for t in tasks
                ):
                    return st
            if time.monotonic() >= deadline:
                raise ConnectorTimeout(f"connector {name} not RUNNING after {timeout:.0f}s; last status: {summary(last)}")
            time.sleep(interval)

    def restart(self, name: str, failed_only: bool = True) -> dict[str, Any] | None:
        """Restart the connector and its tasks (only the FAILED ones if ``failed_only``).

        Asynchronous: returns Connect's answer (instances to restart marked RESTARTING), or None
        when Connect has nothing to report; follow with :meth:`wait_running`.
        """
        params = {"includeTasks": "true", "onlyFailed": "true" if failed_only else "false"}
        resp = self._request("POST", self._path(name) + "/restart", params=params)
        log.info("connector %s: restart requested (failed_only=%s)", name, failed_only)
        return dict(resp.json()) if resp.status_code == 202 and resp.content else None

    def delete(self, name: str, interval: float = 0.25) -> bool:
        """Delete the connector; False if it did not exist. Its replication slot stays: see slots.py.

        Returns once Connect no longer knows the connector: the worker answers the DELETE when the
        tombstone is written to the config topic, and until it has read that record back a GET (or
        a second DELETE) still finds the connector. A caller that deletes, then creates or checks,
        must not see the old one. Waits at most ``conflict_retry_s``; a connector still listed then
        is logged, not raised (the tombstone is written and will be applied)."""
        try:
            self._request("DELETE", self._path(name))
        except ConnectorNotFound:
            return False
        deadline = time.monotonic() + self.conflict_retry_s
        while self.get_config(name) is not None:
            if time.monotonic() >= deadline:
                log.warning("connector %s: deleted, still listed after %.0f s", name, self.conflict_retry_s)
                break
            time.sleep(interval)
        log.info("connector %s: deleted", name)
        return True


def check_failed(name: str, status: Mapping[str, Any], secrets: Iterable[str] = ()) -> None:
    """Raise :class:`ConnectorFailed` if the status shows a FAILED connector or task."""
    conn = status.get("connector", {})
    if conn.get("state") == "FAILED":
        raise ConnectorFailed(name, "connector", _trace(conn.get("trace"), secrets))
    for task in status.get("tasks") or []:
        if task.get("state") == "FAILED":
            raise ConnectorFailed(name, f"task {task.get('id')}", _trace(task.get("trace"), secrets))


def _trace(trace: Any, secrets: Iterable[str]) -> str:
    lines = str(trace or "(no trace)").splitlines()
    text = "\n".join(lines[:TRACE_LINES]) + (f"\n... ({len(lines) - TRACE_LINES} more lines)" if len(lines) > TRACE_LINES else "")
    return scrub(text, secrets)


def summary(status: Mapping[str, Any] | str) -> str:
    """One line: ``connector RUNNING; task 0 RUNNING``."""
    if isinstance(status, str):
        return status
    parts = [f"connector {status.get('connector', {}).get('state', '?')}"]
    parts += [f"task {t.get('id')} {t.get('state')}" for t in status.get("tasks") or []]
    if not status.get("tasks"):
        parts.append("no tasks")
    return "; ".join(parts)


def _rebalancing(resp: requests.Response) -> bool:
    if resp.status_code == 409:
        return True
    return resp.status_code == 500 and "rebalance" in resp.text.lower()
