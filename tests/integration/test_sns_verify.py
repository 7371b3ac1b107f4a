"""SNS envelopes signed with a locally generated RSA key and self-signed certificate.

The certificate is served by an injected fetcher, as a test cannot reach sns.<region>.amazonaws.com;
the rule that ``SigningCertURL`` is https on an SNS host is the production one, untouched."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from imagesearch.config import EventSettings
from imagesearch.records import source_id
from imagesearch.s3.event_log import MemoryEventLog
from imagesearch.s3.sns import SnsVerificationError, SnsVerifier, check_sns_url, string_to_sign
from imagesearch.vocab import Stage

TOPIC = "arn:aws:sns:us-east-1:123456789012:image-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
                 f"{TOPIC}&Token=2336412f37f")


def _certificate(key, days_valid: int = 30, not_before_days: int = -1) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=not_before_days))
            .not_valid_after(now + dt.timedelta(days=days_valid)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _certificate(key)


class Fetcher:
    def __init__(self, pem_by_url: dict[str, bytes]) -> None:
        self.pem_by_url, self.calls = pem_by_url, []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pem_by_url[url]


def sign(envelope: dict, key, version: str = "1") -> dict:
    envelope = dict(envelope, SignatureVersion=version)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), digest)
    return dict(envelope, Signature=base64.b64encode(signature).decode())


def notification(message: str, topic: str = TOPIC, subject: str | None = "Amazon S3 Notification",
                 cert_url: str = CERT_URL) -> dict:
    envelope = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": message,
                "Timestamp": "2024-05-01T12:00:00.000Z", "SigningCertURL": cert_url,
                "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def confirmation(kind: str = "SubscriptionConfirmation", topic: str = TOPIC) -> dict:
    return {"Type": kind, "MessageId": str(uuid.uuid4()), "Token": "2336412f37f", "TopicArn": topic,
            "Message": "You have chosen to subscribe to the topic.", "SubscribeURL": SUBSCRIBE_URL,
            "Timestamp": "2024-05-01T12:00:00.000Z", "SigningCertURL": CERT_URL}


def s3_message(key: str = "cats/tabby cat.jpg") -> str:
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "photos"}, "object": {"key": quote_plus(key), "size": 100, "eTag": "abc",
                                                        "sequencer": "0055AED6DCD90281E5"}}}]})


# -- the verifier ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", ["Amazon S3 Notification", None])
def test_signature_versions_1_and_2_are_accepted(signer, version, subject):
    key, pem = signer
    fetcher = Fetcher({CERT_URL: pem})
    verifier = SnsVerifier([TOPIC], fetcher)
    envelope = sign(notification(s3_message(), subject=subject), key, version)
    assert verifier.verify(envelope) is envelope
    assert verifier.verify(sign(confirmation(), key, version))
    assert fetcher.calls == [CERT_URL]  # the certificate is fetched once, then cached


def test_forged_signature_is_refused(signer):
    _, pem = signer
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = SnsVerifier([TOPIC], Fetcher({CERT_URL: pem}))
    with pytest.raises(SnsVerificationError) as caught:
        verifier.verify(sign(notification(s3_message()), other))
    assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize("field,value", [("Message", s3_message("dogs/other.jpg")), ("Subject", "changed"),
                                         ("Timestamp", "2030-01-01T00:00:00.000Z"), ("MessageId", "m2"),
                                         ("Type", "SubscriptionConfirmation")])
def test_tampered_message_is_refused(signer, field, value):
    key, pem = signer
    envelope = sign(notification(s3_message()), key, "2")
    envelope[field] = value
    with pytest.raises(SnsVerificationError) as caught:
        SnsVerifier([TOPIC], Fetcher({CERT_URL: pem})).verify(envelope)
    assert caught.value.code in ("invalid_signature", "invalid_message")


def test_wrong_topic_is_refused_before_any_certificate_is_fetched(signer):
    key, pem = signer
    fetcher = Fetcher({CERT_URL: pem})
    other_topic = "arn:aws:sns:us-east-1:999999999999:someone-else"
    with pytest.raises(SnsVerificationError) as caught:
        SnsVerifier([TOPIC], fetcher).verify(sign(notification(s3_message(), topic=other_topic), key))
    assert caught.value.code == "topic_not_allowed" and fetcher.calls == []
    with pytest.raises(SnsVerificationError):
        SnsVerifier([], fetcher).verify(sign(notification(s3_message()), key))  # empty allowlist: nothing


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/cert.pem",
    "https://example.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
    "https://user:pw@sns.us-east-1.amazonaws.com/cert.pem",
    "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    "https://s3.us-east-1.amazonaws.com/cert.pem",
    "https://sns.amazonaws.com/cert.pem",
    "file:///etc/passwd",
    "",
    None,
])
def test_non_sns_certificate_urls_are_refused(signer, url):
    key, pem = signer
    fetcher = Fetcher({url: pem}) if isinstance(url, str) else Fetcher({})
    envelope = sign(notification(s3_message(), cert_url=url), key) if isinstance(url, str) else \
        sign({k: v for k, v in notification(s3_message()).items() if k != "SigningCertURL"}, key)
    with pytest.raises(SnsVerificationError) as caught:
        SnsVerifier([TOPIC], fetcher).verify(envelope)
    assert caught.value.code == "invalid_cert_url" and fetcher.calls == []


@pytest.mark.parametrize("url", ["https://sns.eu-west-1.amazonaws.com/a.pem", "https://sns.cn-north-1.amazonaws.com.cn/a.pem",
                                 "https://sns.us-gov-west-1.amazonaws.com:443/a.pem"])
def test_sns_hosts_are_accepted(url):
    assert check_sns_url(url) == url


def test_unknown_signature_version_bad_base64_and_expired_certificates(signer):
    key, pem = signer
    verifier = SnsVerifier([TOPIC], Fetcher({CERT_URL: pem}))
    envelope = sign(notification(s3_message()), key)
    for version in ("3", None, "0"):
        with pytest.raises(SnsVerificationError, match="SignatureVersion"):
            verifier.verify(dict(envelope, SignatureVersion=version))
    with pytest.raises(SnsVerificationError, match="base64"):
        verifier.verify(dict(envelope, Signature="***"))
    expired = SnsVerifier([TOPIC], Fetcher({CERT_URL: _certificate(key, days_valid=-1, not_before_days=-10)}))
    with pytest.raises(SnsVerificationError, match="not valid now"):
        expired.verify(envelope)
    garbage = SnsVerifier([TOPIC], Fetcher({CERT_URL: b"-----BEGIN CERTIFICATE-----\nnope\n"}))
    with pytest.raises(SnsVerificationError) as caught:
        garbage.verify(envelope)
    assert caught.value.code == "invalid_cert"


# -- the endpoint --------------------------------------------------------------------------------------

@pytest.fixture
def sns_app(make_app, signer):
    from api import events

    _, pem = signer
    confirmed: list[str] = []
    app = make_app(events=EventSettings(sns_topic_allowlist=f"{TOPIC}, arn:aws:sns:x:1:other"))
    sent = app.extensions["imagesearch"].queue.sent[Stage.EMBED]

    def http_get(url: str) -> int:
        confirmed.append(url)
        return 200

    events.configure(app, fetch_cert=Fetcher({CERT_URL: pem}), http_get=http_get, event_log=MemoryEventLog())
    return app.test_client(), sent, confirmed


def _post(client, envelope: dict, kind: str | None = None):
    headers = {"x-amz-sns-message-type": kind or envelope.get("Type", "")}
    return client.post("/v1/events/sns", data=json.dumps(envelope), headers=headers, content_type="text/plain")


@pytest.mark.parametrize("version", ["1", "2"])
def test_subscription_is_confirmed_only_after_verification(sns_app, signer, version):
    client, _, confirmed = sns_app
    key, _ = signer
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _post(client, sign(confirmation(), other, version))
    assert forged.status_code == 403 and forged.json["error"]["code"] == "invalid_signature" and confirmed == []
    foreign = _post(client, sign(confirmation(topic="arn:aws:sns:us-east-1:1:foreign"), key, version))
    assert foreign.status_code == 403 and foreign.json["error"]["code"] == "topic_not_allowed" and confirmed == []
    ok = _post(client, sign(confirmation(), key, version))
    assert ok.status_code == 200 and ok.json == {"confirmed": True, "topic": TOPIC}
    assert confirmed == [SUBSCRIBE_URL]
    bye = _post(client, sign(confirmation("UnsubscribeConfirmation"), key, version))
    assert bye.status_code == 200 and bye.json["unsubscribed"] is True and confirmed == [SUBSCRIBE_URL]


def test_a_signed_notification_is_applied(sns_app, signer):
    client, sent, _ = sns_app
    key, _ = signer
    response = _post(client, sign(notification(s3_message("cats/tabby cat+1 é.jpg")), key, "2"))
    assert response.status_code == 200, response.json
    image_id = source_id("photos", "cats/tabby cat+1 é.jpg")
    assert [r["action"] for r in response.json["results"]] == ["queued"] and sent == [image_id]
    assert client.get(f"/v1/images/{image_id}").json["source"] == "s3://photos/cats/tabby cat+1 é.jpg"
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"})
    assert _post(client, sign(notification(test_event), key)).json["test_events"] == 1


def test_refusals_are_json_4xx_and_never_apply_anything(sns_app, signer):
    client, sent, confirmed = sns_app
    key, _ = signer
    tampered = sign(notification(s3_message()), key)
    tampered["Message"] = s3_message("evil.jpg")
    cases = [
        (_post(client, tampered), 403, "invalid_signature"),
        (_post(client, sign(notification(s3_message(), cert_url="https://evil.example/c.pem"), key)), 403,
         "invalid_cert_url"),
        (_post(client, sign(notification(s3_message()), key), kind="SubscriptionConfirmation"), 400, "invalid_message"),
        (client.post("/v1/events/sns", data="not json"), 400, "invalid_message"),
        (client.post("/v1/events/sns", data="[]"), 400, "invalid_message"),
        (client.post("/v1/events/sns", data=""), 400, "empty_body"),
        (_post(client, {"Type": "Notification", "TopicArn": TOPIC, "Message": "{}"}), 403, "invalid_signature"),
        (_post(client, sign(notification("not an s3 event"), key)), 400, "invalid_event"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.json)
        assert response.json["error"]["code"] == code and response.json["error"]["message"]
    assert sent == [] and confirmed == []


@pytest.mark.parametrize("field", ["TopicArn", "SignatureVersion", "Signature", "SigningCertURL", "Message",
                                   "MessageId", "Timestamp", "Subject"])
@pytest.mark.parametrize("value", [{}, [], 1, True])
def test_fields_of_the_wrong_type_are_400_not_500(sns_app, signer, field, value):
    """Found by schemathesis: `"TopicArn": {}` answered 500 (unhashable dict in the allowlist lookup)."""
    client, sent, confirmed = sns_app
    key, _ = signer
    envelope = dict(sign(notification(s3_message()), key), **{field: value})
    response = _post(client, envelope)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_message" and field in response.json["error"]["message"]
    assert sent == [] and confirmed == []


def test_a_subscribe_url_off_sns_is_never_fetched(sns_app, signer):
    client, _, confirmed = sns_app
    key, _ = signer
    envelope = sign(dict(confirmation(), SubscribeURL="https://evil.example/confirm"), key)
    response = _post(client, envelope)
    assert response.status_code == 403 and response.json["error"]["code"] == "invalid_subscribe_url"
    assert confirmed == []
