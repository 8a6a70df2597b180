"""The sandbox's user is the provider's ``User``: one description of a customer, answered field for field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from airflow_provider_ahachat.models import User
from airflow_provider_ahachat.sandbox import SandboxState
from airflow_provider_ahachat.sandbox.seed import build_user
from airflow_provider_ahachat.sandbox.world import SandboxUser


def test_every_seeded_user_is_a_provider_user_answered_with_exactly_its_fields() -> None:
    state = SandboxState()
    users = [user for bot in state.bots.values() for user in bot.users.values()]
    assert users
    for user in users:
        assert isinstance(user, User)
        answer = user.to_json()
        assert list(answer) == list(User.model_fields)  # every field, in the model's order, nothing else
        parsed = User.model_validate(answer)
        assert parsed.model_dump(exclude={"last_interaction_at"}) == user.model_dump(
            exclude={"last_interaction_at"}
        )
        if user.last_interaction_at is None:
            assert answer["last_interaction_at"] is None
        else:
            assert answer["last_interaction_at"].endswith("Z")
            assert parsed.last_interaction_at is not None
            assert abs(parsed.last_interaction_at - user.last_interaction_at) < timedelta(milliseconds=1)


def test_the_answer_is_a_copy_and_the_sandbox_user_refuses_unknown_fields() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    user = build_user(
        {
            "messenger_user_id": "123456789",
            "tags": ["vip"],
            "attributes": {"city": "Huế"},
            "phone": "0908071111",
        },
        now,
    )
    answer = user.to_json()
    answer["tags"].append("changed")
    answer["attributes"]["city"] = "changed"
    assert user.tags == ["vip"] and user.attributes == {"city": "Huế"}
    assert answer["first_name"] is None and answer["subscribed"] is True
    assert user.context()["phone"] == "0908071111" and user.context()["city"] == "Huế"
    with pytest.raises(ValidationError, match="nickname"):
        SandboxUser(messenger_user_id="1", nickname="x")  # type: ignore[call-arg]
