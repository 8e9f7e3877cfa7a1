"""agent.py's SigV4 signer against AWS's published examples, so the signing is proven rather than just
accepted by moto: the aws-sig-v4-test-suite's `get-vanilla`, `get-vanilla-query-order-key-case` and
`post-sts-token/post-sts-header-before` (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service
`service`), and the IAM ListUsers example of the SigV4 documentation (its derived key and signature)."""

from __future__ import annotations

from conftest import agent

CREDS = agent.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
DATE = "20150830T123600Z"
# The suite's session token for post-sts-header-before.
STS_TOKEN = ("AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoI"
             "YRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXD"
             "vp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPO"
             "Ln9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==")
SUITE_SCOPE = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "


def test_get_vanilla() -> None:
    headers = agent.sigv4_headers("GET", "https://example.amazonaws.com/", {}, b"", CREDS, "us-east-1",
                                  "service", DATE)
    assert headers["Authorization"] == (
        SUITE_SCOPE + "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    assert headers["Host"] == "example.amazonaws.com" and headers["X-Amz-Date"] == DATE
    assert "X-Amz-Security-Token" not in headers


def test_get_vanilla_query_order_key_case() -> None:
    headers = agent.sigv4_headers("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", {}, b"",
                                  CREDS, "us-east-1", "service", DATE)
    assert headers["Authorization"] == (
        SUITE_SCOPE + "SignedHeaders=host;x-amz-date, "
        "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")


def test_post_sts_header_before() -> None:
    """A session token (what Pod Identity and AssumeRole give) is a signed header."""
    creds = agent.Credentials(CREDS.access_key, CREDS.secret_key, STS_TOKEN)
    headers = agent.sigv4_headers("POST", "https://example.amazonaws.com/", {}, b"", creds, "us-east-1",
                                  "service", DATE)
    assert headers["Authorization"] == (
        SUITE_SCOPE + "SignedHeaders=host;x-amz-date;x-amz-security-token, "
        "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
    assert headers["X-Amz-Security-Token"] == STS_TOKEN


def test_iam_list_users_example() -> None:
    assert agent.signing_key(CREDS.secret_key, "20150830", "us-east-1", "iam").hex() == (
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9")
    assert agent.signing_key(CREDS.secret_key, "20120215", "us-east-1", "iam").hex() == (
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    headers = agent.sigv4_headers(
        "GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, b"", CREDS, "us-east-1", "iam",
        DATE)
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
