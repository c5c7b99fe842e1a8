"""Failure alerts: a dead letter posts a short Slack-compatible message to ALERT_WEBHOOK_URL.

At most `ALERT_MAX_PER_MINUTE` alerts leave in any 60 seconds across all workers
(a sliding window in Redis), so a storm of failures does not flood the channel;
the next alert that goes out says how many were held back.
"""

from __future__ import annotations

import logging
import secrets
from importlib import resources

import httpx
from redis.asyncio import Redis

from jobs import metrics
from jobs.records import PREFIX, JobRecord, now_ms
from jobs.settings import Settings

log = logging.getLogger("jobs.alerts")


SENT_KEY = f"{PREFIX}alerts:sent"
WINDOW_MS = 60_000


class Alerter:
    """Posts failure alerts, within the rate limit."""

    def __init__(self, redis: Redis, http: httpx.AsyncClient, settings: Settings) -> None:
        self.redis = redis
        self.http = http
        self.settings = settings
        source = (resources.files("jobs") / "lua" / "rate.lua").read_text()
        self._allow = redis.register_script(source)

    async def dead_letter(self, record: JobRecord) -> bool:
        """Post one alert for a dead letter, unless the rate limit holds it back."""
        url = self.settings.alert_webhook_url
        if not url:
            return False
        allowed = await self._allow(
            keys=[SENT_KEY],
            args=[now_ms(), WINDOW_MS, self.settings.alert_max_per_minute, secrets.token_hex(8)],
        )
        if not allowed:
            await self.redis.incr(f"{PREFIX}alerts:held")
            metrics.ALERTS.labels("held_back").inc()
            return False
        held = int(await self.redis.getset(f"{PREFIX}alerts:held", 0) or 0)
        error = record.error or {}
        text = (
            f":rotating_light: longrun dead letter: {record.kind} job {record.id} "
            f"(account {record.account}) failed for good after {record.attempt} attempt(s): "
            f"{error.get('type')}: {error.get('message')}"
        )
        if held:
            text += f" ({held} more alert(s) were held back by the rate limit)"
        try:
            answer = await self.http.post(url, json={"text": text[:3000]}, timeout=10)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            metrics.ALERTS.labels("error").inc()
            log.warning("failure alert could not be posted: %s", exc)
            return False
        metrics.ALERTS.labels("sent").inc()
        return True
