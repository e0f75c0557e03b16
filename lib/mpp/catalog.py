"""The campaign catalog: a file format marketers edit and its validation (the table that holds it
is ``mpp.stores.campaigns``'s).

File format: JSON Lines (one campaign per line), a JSON array, or CSV with a header. Fields
are those of ``mpp.v1.Campaign``; in CSV, ``tags``, ``intents``, ``channels`` and ``locales``
are ``|``-separated. ``channels`` and ``locales`` target a campaign (empty: anywhere); see
``targets``.
Loading is an upsert by ``campaign_id``: loading the same file twice changes nothing, and a
campaign missing from the file is left as it is (deactivate it with ``"active": false``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator

CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Channels and locales, on events (mpp.validation) and in campaign targeting: a lowercase
# token; a BCP 47 language tag.
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,31}$"
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


def targets(channels: Iterable[str], locales: Iterable[str], channel: str, locale: str) -> bool:
    """Whether a campaign targeted at ``channels`` and ``locales`` (empty: any) may be shown on
    a request's ``channel`` and ``locale``. A request that does not say its channel (or
    locale) sees only campaigns that do not restrict it. A campaign locale matches the same tag
    and its more specific forms: "en" matches "en" and "en-GB", "en-GB" not "en-US"; case is
    ignored."""
    channels, locales = list(channels), list(locales)
    if channels and channel.lower() not in channels:
        return False
    if not locales:
        return True
    wanted = locale.lower()
    return any(wanted == tag or wanted.startswith(tag + "-") for tag in locales)


class Campaign(BaseModel):
    campaign_id: Annotated[str, Field(pattern=CAMPAIGN_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=2000)] = ""
    active: bool = True
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    tags: list[str] = []
    intents: list[str] = []
    daily_frequency_cap: Annotated[int, Field(ge=0)] = 0
    channels: list[Annotated[str, Field(pattern=CHANNEL_PATTERN)]] = []
    locales: list[Annotated[str, Field(pattern=LOCALE_PATTERN)]] = []

    @field_validator("tags", "intents", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split("|") if part.strip()]
        return v

    @field_validator("channels", "locales", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = cls._split(v)
        if isinstance(v, list):
            return sorted({item.strip().lower() for item in v if isinstance(item, str)})
        return v

    def is_live(self, now: datetime) -> bool:
        """Active and within its dates (``now`` must be timezone-aware)."""
        return (
            self.active
            and (self.starts_at is None or self.starts_at <= now)
            and (self.ends_at is None or now < self.ends_at)
        )


class CatalogError(ValueError):
    """A catalog file has invalid entries; the message names each line and field."""


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        for number, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            yield number, {k: v for k, v in row.items() if v not in (None, "")}
        return
    stripped = text.lstrip()
    if stripped.startswith("["):
        for number, item in enumerate(json.loads(text), start=1):
            yield number, item
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CatalogError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc


def parse_campaigns(path: Path) -> list[Campaign]:
    """Read and validate every campaign in ``path``; all problems are reported at once."""
    campaigns: list[Campaign] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, record in _records(path):
        try:
            campaign = Campaign.model_validate(record)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "(record)"
                problems.append(f"{path}:{number}: {field}: {err['msg']}")
            continue
        if campaign.campaign_id in seen:
            problems.append(
                f"{path}:{number}: campaign_id {campaign.campaign_id!r} already defined on "
                f"line {seen[campaign.campaign_id]}"
            )
            continue
        seen[campaign.campaign_id] = number
        campaigns.append(campaign)
    if problems:
        raise CatalogError("invalid campaign catalog:\n" + "\n".join(problems))
    return campaigns


def default_campaigns_path() -> Path:
    return Path(str(resources.files("mpp.data").joinpath("campaigns.jsonl")))
