"""How the app reads a request body: straight from the WSGI input for a plain Content-Length
(what the API server sends), through werkzeug's bounded stream otherwise. gunicorn refuses a
malformed Content-Length before the app sees it; the app must not depend on that."""
import io
import json
from pathlib import Path

import pytest

from webhook.admission.app import create_app
from webhook.cluster.source import EmptySource
from webhook.config import DEFAULT

REVIEW = (Path(__file__).resolve().parent.parent / "examples" / "admission" / "create-allowed.json").read_bytes()


@pytest.fixture(scope="module")
def client():
    return create_app(DEFAULT, EmptySource()).test_client()


def _post(client, body: bytes, **environ):
    return client.post("/validate", data=body, content_type="application/json", environ_overrides=environ)


def test_a_plain_content_length_is_answered(client):
    resp = _post(client, REVIEW)
    assert resp.status_code == 200
    assert resp.get_json()["response"]["uid"] == json.loads(REVIEW)["request"]["uid"]


def test_a_chunked_body_without_a_length_is_answered(client):
    # What gunicorn hands over for Transfer-Encoding: chunked: no CONTENT_LENGTH, a terminated input.
    resp = client.post("/validate", input_stream=io.BytesIO(REVIEW), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 200
    assert resp.get_json()["response"]["allowed"] is True


@pytest.mark.parametrize("length", ["\u00b2", "1e3", "-5", " 12"])
def test_a_content_length_that_is_not_plain_digits_is_a_400_not_a_500(client, length):
    resp = _post(client, REVIEW, CONTENT_LENGTH=length)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["reason"]


def test_a_declared_length_over_the_limit_is_refused_before_reading(client):
    limit = DEFAULT.server.maxRequestBytes
    resp = _post(client, REVIEW, CONTENT_LENGTH=str(limit + 1))
    assert resp.status_code == 400
    assert resp.get_json()["error"]["reason"] == "body-too-large"
