"""The confirmation guard, with a fake clock."""

from __future__ import annotations

import pytest

from kamiwaza_mcp.guard import DEFAULT_TTL_SECONDS, ConfirmationError, ConfirmationGuard

DEPLOYMENT = "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"
OTHER_DEPLOYMENT = "0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guard(clock: FakeClock) -> ConfirmationGuard:
    return ConfirmationGuard(clock=clock)


def test_default_ttl_is_five_minutes() -> None:
    assert DEFAULT_TTL_SECONDS == 300.0
    assert ConfirmationGuard().ttl_seconds == 300.0


def test_fresh_token_is_accepted_once(guard: ConfirmationGuard) -> None:
    token = guard.issue("stop_deployment", DEPLOYMENT)

    guard.redeem(token, "stop_deployment", DEPLOYMENT)

    with pytest.raises(ConfirmationError, match="already used"):
        guard.redeem(token, "stop_deployment", DEPLOYMENT)


def test_tokens_are_distinct_and_long(guard: ConfirmationGuard) -> None:
    tokens = {guard.issue("stop_deployment", DEPLOYMENT) for _ in range(50)}

    assert len(tokens) == 50
    assert min(len(token) for token in tokens) >= 32


def test_token_valid_just_before_expiry(guard: ConfirmationGuard, clock: FakeClock) -> None:
    token = guard.issue("unload_model", DEPLOYMENT)
    clock.now += 299.9

    guard.redeem(token, "unload_model", DEPLOYMENT)


def test_expired_token_is_rejected(guard: ConfirmationGuard, clock: FakeClock) -> None:
    token = guard.issue("unload_model", DEPLOYMENT)
    clock.now += 300.0

    with pytest.raises(ConfirmationError) as caught:
        guard.redeem(token, "unload_model", DEPLOYMENT)

    assert "expired" in str(caught.value)
    assert f"call unload_model on {DEPLOYMENT} without confirmation_token" in str(caught.value)


def test_expired_token_stays_expired_when_reissued(guard: ConfirmationGuard, clock: FakeClock) -> None:
    old = guard.issue("stop_deployment", DEPLOYMENT)
    clock.now += 400
    new = guard.issue("stop_deployment", DEPLOYMENT)

    with pytest.raises(ConfirmationError, match="expired"):
        guard.redeem(old, "stop_deployment", DEPLOYMENT)
    guard.redeem(new, "stop_deployment", DEPLOYMENT)


def test_token_for_other_deployment_is_rejected(guard: ConfirmationGuard) -> None:
    token = guard.issue("stop_deployment", DEPLOYMENT)

    with pytest.raises(ConfirmationError) as caught:
        guard.redeem(token, "stop_deployment", OTHER_DEPLOYMENT)

    message = str(caught.value)
    assert f"issued for stop_deployment on {DEPLOYMENT}" in message
    assert f"not for stop_deployment on {OTHER_DEPLOYMENT}" in message
    # The rejection does not spend the token for its own deployment.
    guard.redeem(token, "stop_deployment", DEPLOYMENT)


def test_token_for_other_action_is_rejected(guard: ConfirmationGuard) -> None:
    token = guard.issue("unload_model", DEPLOYMENT)

    with pytest.raises(ConfirmationError, match=f"issued for unload_model on {DEPLOYMENT}"):
        guard.redeem(token, "stop_deployment", DEPLOYMENT)


def test_made_up_token_is_rejected(guard: ConfirmationGuard) -> None:
    guard.issue("stop_deployment", DEPLOYMENT)

    with pytest.raises(ConfirmationError, match="unknown confirmation token"):
        guard.redeem("yes-i-confirm", "stop_deployment", DEPLOYMENT)


@pytest.mark.parametrize("token", [True, False, 1, None])
def test_non_string_token_is_rejected(guard: ConfirmationGuard, token: object) -> None:
    with pytest.raises(ConfirmationError) as caught:
        guard.redeem(token, "stop_deployment", DEPLOYMENT)

    assert "must be the token string a preview call returned" in str(caught.value)
    assert "without confirmation_token" in str(caught.value)


def test_rejection_kind_is_confirmation_error(guard: ConfirmationGuard) -> None:
    with pytest.raises(ConfirmationError) as caught:
        guard.redeem("x", "stop_deployment", DEPLOYMENT)

    assert caught.value.kind == "ConfirmationError"


def test_old_tokens_are_forgotten(guard: ConfirmationGuard, clock: FakeClock) -> None:
    old = guard.issue("stop_deployment", DEPLOYMENT)
    clock.now += 300 + 3600 + 1
    guard.issue("stop_deployment", DEPLOYMENT)

    with pytest.raises(ConfirmationError, match="unknown confirmation token"):
        guard.redeem(old, "stop_deployment", DEPLOYMENT)


def test_invalid_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be positive, got 0"):
        ConfirmationGuard(ttl_seconds=0)


def test_question_age_is_taken_once(guard: ConfirmationGuard, clock: FakeClock) -> None:
    guard.record_question("stop_deployment", DEPLOYMENT)
    clock.now += 12.5

    assert guard.take_question_age("stop_deployment", DEPLOYMENT) == 12.5
    assert guard.take_question_age("stop_deployment", DEPLOYMENT) is None


def test_question_is_bound_to_action_and_target(guard: ConfirmationGuard) -> None:
    guard.record_question("unload_model", DEPLOYMENT)

    assert guard.take_question_age("stop_deployment", DEPLOYMENT) is None
    assert guard.take_question_age("unload_model", OTHER_DEPLOYMENT) is None
    assert guard.take_question_age("unload_model", DEPLOYMENT) == 0
