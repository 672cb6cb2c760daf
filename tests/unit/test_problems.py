from veil.core.problems import FieldError, Problem, conflict, too_many_requests, validation_failed


def test_problem_document_has_the_rfc_9457_members() -> None:
    doc = Problem(404, "No such thing.").document()
    assert doc == {
        "type": "https://veil.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "No such thing.",
    }


def test_validation_problem_lists_locations_and_messages_only() -> None:
    doc = validation_failed([FieldError(("body", "email"), "value is not a valid email")]).document()
    assert doc["status"] == 422
    assert doc["errors"] == [{"loc": ["body", "email"], "msg": "value is not a valid email"}]


def test_extra_members_are_top_level() -> None:
    assert conflict("Stale epoch.", current_epoch=3).document()["current_epoch"] == 3


def test_rate_limit_problem_carries_retry_after() -> None:
    problem = too_many_requests(0)
    assert problem.headers["Retry-After"] == "1"
    assert problem.status == 429
