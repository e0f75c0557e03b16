from pathlib import Path

import pytest

from mpp.catalog import CatalogError, default_campaigns_path, parse_campaigns, targets


def test_default_catalog_is_valid_and_has_live_and_retired_campaigns() -> None:
    campaigns = parse_campaigns(default_campaigns_path())
    assert len(campaigns) >= 10
    assert any(not c.active for c in campaigns)
    assert all(c.description for c in campaigns if c.active)


def test_errors_name_line_field_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"campaign_id": "ok-1", "name": "Fine"}\n'
        '{"campaign_id": "bad id!", "name": "X"}\n'
        '{"campaign_id": "ok-2", "name": "Y", "daily_frequency_cap": -1}\n'
        '{"campaign_id": "ok-1", "name": "Again"}\n'
    )
    with pytest.raises(CatalogError) as info:
        parse_campaigns(path)
    message = str(info.value)
    assert f"{path}:2: campaign_id" in message
    assert f"{path}:3: daily_frequency_cap" in message
    assert "already defined on line 1" in message


def test_csv_lists_and_naive_dates(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "campaign_id,name,tags,intents,starts_at\nc1,One,a|b,travel,2026-01-01T00:00:00Z\n"
    )
    (campaign,) = parse_campaigns(path)
    assert campaign.tags == ["a", "b"]
    assert campaign.intents == ["travel"]
    assert campaign.starts_at is not None and campaign.starts_at.year == 2026
    path.write_text("campaign_id,name,starts_at\nc1,One,2026-01-01T00:00:00\n")
    with pytest.raises(CatalogError, match="starts_at"):
        parse_campaigns(path)


def test_targeting_is_parsed_lowercased_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "campaign_id,name,channels,locales\n"
        "promo,Promo,Email|push,en|pt-BR\n"
        "bad,Bad,in app,english!\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as err:
        parse_campaigns(path)
    assert "channels" in str(err.value) and "locales" in str(err.value)
    path.write_text(
        "campaign_id,name,channels,locales\npromo,Promo,Email|push,en|pt-BR\n", encoding="utf-8"
    )
    (promo,) = parse_campaigns(path)
    assert promo.channels == ["email", "push"] and promo.locales == ["en", "pt-br"]
    assert targets(promo.channels, promo.locales, "push", "pt-BR")
    assert not targets(promo.channels, promo.locales, "chat", "en")
    assert not targets(promo.channels, promo.locales, "push", "de")
