"""LearningStudio OAuth 1.0a CMAC-AES: the pure signing functions (no I/O).

Expected base strings are written out by hand from the algorithm in the vendor reference, so they do
not depend on the implementation under test.
"""

from __future__ import annotations

import base64
import re
import time

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from worker.adapters import oauth1_cmac
from worker.adapters.oauth1_cmac import SignatureInvalid, java_urlencode
from worker.errors import ConfigurationError

SECRET = "0123456789abcdef"  # 16 bytes
FIXED = {
    "oauth_consumer_key": "ck",
    "application_id": "app",
    "oauth_signature_method": "CMAC-AES",
    "oauth_timestamp": "1400000000",
    "oauth_nonce": "abc123",
}
CREDS = {"consumer_key": "ck", "application_id": "app", "secret": SECRET}


def _cmac_b64(key: str, message: str) -> str:
    mac = cmac.CMAC(algorithms.AES(key.encode()))
    mac.update(message.encode())
    return base64.b64encode(mac.finalize()).decode()


# -- AES-CMAC: RFC 4493 section 4 ----------------------------------------------------------------
RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "tag"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_aes_cmac_rfc4493_vectors(length: int, tag: str) -> None:
    assert oauth1_cmac.aes_cmac(RFC4493_KEY, RFC4493_MSG[:length]).hex() == tag


# -- Java URLEncoder semantics ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("AZaz09", "AZaz09"),
        (".-*_", ".-*_"),
        ("~", "%7E"),
        (" ", "+"),
        ("a b~c*d", "a+b%7Ec*d"),
        ("+/=", "%2B%2F%3D"),
        ("&?#%", "%26%3F%23%25"),
        ("\n", "%0A"),
        ("é", "%C3%A9"),
        ("€", "%E2%82%AC"),
        ("'!()", "%27%21%28%29"),
        ("", ""),
    ],
)
def test_java_urlencode(raw: str, encoded: str) -> None:
    assert java_urlencode(raw) == encoded


def test_java_urlencode_hex_is_upper_case() -> None:
    assert java_urlencode("\xff\x1f") == "%C3%BF%1F"
    escapes = re.findall(r"%(..)", java_urlencode("".join(map(chr, range(32, 256)))))
    assert escapes and all(re.fullmatch(r"[0-9A-F]{2}", e) for e in escapes)


# -- base string -------------------------------------------------------------------------------------
def test_base_string_get_with_query_params_sorted_case_insensitively() -> None:
    url = "https://api.learningstudio.com/courses/123/items?expand=grade&Zeta=1&alpha=a%2Fb"
    expected = (
        "GET&%2Fcourses%2F123%2Fitems&"
        "alpha%3Da%252Fb%26application_id%3Dapp%26expand%3Dgrade%26oauth_consumer_key%3Dck"
        "%26oauth_nonce%3Dabc123%26oauth_signature_method%3DCMAC-AES%26oauth_timestamp%3D1400000000"
        "%26Zeta%3D1"
    )
    assert oauth1_cmac.base_string("get", url, FIXED, None) == expected
    # a body is never part of a GET's base string
    assert oauth1_cmac.base_string("GET", url, FIXED, b"ignored") == expected


@pytest.mark.parametrize("method", ["POST", "PUT", "put"])
def test_base_string_post_put_has_double_encoded_base64_body(method: str) -> None:
    body = b'{"g":"~~~"}'  # Base64 "eyJnIjoifn5+In0=": a "+" and a "="
    assert base64.b64encode(body) == b"eyJnIjoifn5+In0="
    url = "https://api.learningstudio.com/users/u1/courses/c1/gradebookItems/g-1/grade"
    expected = (
        f"{method.upper()}&%2Fusers%2Fu1%2Fcourses%2Fc1%2FgradebookItems%2Fg-1%2Fgrade&"
        "application_id%3Dapp%26body%3DeyJnIjoifn5%25252BIn0%25253D%26oauth_consumer_key%3Dck"
        "%26oauth_nonce%3Dabc123%26oauth_signature_method%3DCMAC-AES%26oauth_timestamp%3D1400000000"
    )
    assert oauth1_cmac.base_string(method, url, FIXED, body) == expected


def test_base_string_keeps_path_percent_encoding_and_encodes_it_again() -> None:
    url = "http://h:8801/users/a%20b~c/grade"
    assert oauth1_cmac.base_string("GET", url, FIXED, None).startswith("GET&%2Fusers%2Fa%2520b%7Ec%2Fgrade&")


# -- the header ------------------------------------------------------------------------------------
def test_header_format_and_known_signature() -> None:
    url = "https://api.learningstudio.com/courses/123/items?expand=grade"
    header = oauth1_cmac.sign("GET", url, None, timestamp=1400000000, nonce="abc123", **CREDS)
    base = (
        "GET&%2Fcourses%2F123%2Fitems&application_id%3Dapp%26expand%3Dgrade%26oauth_consumer_key%3Dck"
        "%26oauth_nonce%3Dabc123%26oauth_signature_method%3DCMAC-AES%26oauth_timestamp%3D1400000000"
    )
    signature = _cmac_b64(SECRET, base)
    assert header == (
        'OAuth realm="https://api.learningstudio.com/courses/123/items",oauth_consumer_key="ck",'
        'application_id="app",oauth_signature_method="CMAC-AES",oauth_timestamp="1400000000",'
        f'oauth_nonce="abc123",oauth_signature="{java_urlencode(signature)}"'
    )
    assert " " not in header.removeprefix("OAuth ")


def test_header_values_are_url_encoded() -> None:
    header = oauth1_cmac.sign(
        "GET", "http://h/x", None, consumer_key="key with space~", application_id="a/b", secret=SECRET
    )
    assert 'oauth_consumer_key="key+with+space%7E"' in header
    assert 'application_id="a%2Fb"' in header
    sig = re.search(r'oauth_signature="([^"]*)"', header)
    assert sig is not None and not re.search(r"[+/=]", sig.group(1))  # Base64 specials are encoded


def test_fresh_nonce_and_current_timestamp_by_default() -> None:
    first = oauth1_cmac.parse_header(oauth1_cmac.sign("GET", "http://h/x", None, **CREDS))
    second = oauth1_cmac.parse_header(oauth1_cmac.sign("GET", "http://h/x", None, **CREDS))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", first.nonce)
    assert first.nonce != second.nonce
    assert abs(first.timestamp - time.time()) < 5


def test_nonce_generator() -> None:
    nonces = {oauth1_cmac.make_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", n) for n in nonces)


# -- the secret ------------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["x" * 16, "x" * 24, "x" * 32, "é" * 8])
def test_secret_of_aes_key_size_accepted(secret: str) -> None:
    assert len(oauth1_cmac.secret_key(secret)) in (16, 24, 32)


@pytest.mark.parametrize("secret", ["", "x" * 15, "x" * 17, "é" * 10, "x" * 33])
def test_secret_of_other_size_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        oauth1_cmac.sign("GET", "http://h/x", None, consumer_key="ck", application_id="app", secret=secret)
    assert secret not in info.value.message or secret == ""


# -- verify ------------------------------------------------------------------------------------------
URL = "http://127.0.0.1:8801/users/u1/courses/c1/gradebookItems/g1/grade"
BODY = b'{"grade":{"points":9}}'


def _signed(method: str = "PUT", url: str = URL, body: bytes | None = BODY, **kw: object) -> str:
    return oauth1_cmac.sign(method, url, body, **{**CREDS, **kw})  # type: ignore[arg-type]


def test_verify_round_trip() -> None:
    header = _signed()
    parsed = oauth1_cmac.verify("PUT", URL, BODY, header, **CREDS)
    assert parsed.realm == URL
    assert parsed.params["oauth_consumer_key"] == "ck"
    assert parsed.params["application_id"] == "app"


def test_verify_round_trip_with_query_and_odd_characters() -> None:
    url = "http://h/users/a%20b~%2F/grade?x=1&Y=a%7E"
    header = oauth1_cmac.sign("GET", url, None, consumer_key="c k", application_id="~a", secret=SECRET)
    oauth1_cmac.verify("GET", url, None, header, consumer_key="c k", application_id="~a", secret=SECRET)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"grade":{"points":10}}'}, "invalid signature"),
        ({"method": "POST"}, "invalid signature"),
        ({"url": URL.replace("u1", "u2")}, "realm"),
        ({"secret": "fedcba9876543210"}, "invalid signature"),
        ({"consumer_key": "other"}, "consumer key"),
        ({"application_id": "other"}, "application id"),
        ({"now_offset": 301}, "timestamp"),
        ({"now_offset": -301}, "timestamp"),
    ],
)
def test_verify_detects_tampering(change: dict[str, object], reason: str) -> None:
    header = _signed()
    args: dict[str, object] = {"method": "PUT", "url": URL, "body": BODY, **CREDS, **change}
    if "now_offset" in args:  # relative to when the header was signed, not to collection time
        args["now"] = time.time() + float(args.pop("now_offset"))  # type: ignore[arg-type]
    with pytest.raises(SignatureInvalid, match=reason):
        oauth1_cmac.verify(
            str(args.pop("method")), str(args.pop("url")), args.pop("body"), header, **args  # type: ignore[arg-type]
        )


def test_verify_same_path_other_host_is_refused_by_realm() -> None:
    header = _signed()
    with pytest.raises(SignatureInvalid, match="realm"):
        oauth1_cmac.verify("PUT", URL.replace("127.0.0.1", "localhost"), BODY, header, **CREDS)


def test_verify_detects_a_tampered_signature() -> None:
    header = _signed()
    sig = re.search(r'oauth_signature="([^"]*)"', header)
    assert sig is not None
    flipped = ("B" if sig.group(1)[0] == "A" else "A") + sig.group(1)[1:]
    with pytest.raises(SignatureInvalid, match="invalid signature"):
        oauth1_cmac.verify("PUT", URL, BODY, header.replace(sig.group(1), flipped), **CREDS)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda h: h.replace("OAuth ", "Bearer "), "not an OAuth header"),
        (lambda h: re.sub(r',oauth_nonce="[^"]*"', "", h), "missing OAuth parameter oauth_nonce"),
        (lambda h: h + ',oauth_version="1.0"', "unexpected OAuth parameter oauth_version"),
        (lambda h: h.replace('"CMAC-AES"', '"HMAC-SHA1"'), "signature method"),
        (lambda h: re.sub(r'oauth_nonce="[^"]*"', 'oauth_nonce="' + "a" * 33 + '"', h), "nonce"),
        (lambda h: re.sub(r'oauth_timestamp="[^"]*"', 'oauth_timestamp="12x"', h), "timestamp"),
        (lambda h: h + ',oauth_nonce="x"', "repeated"),
        (lambda h: h.replace('",', '";', 1), "malformed"),
        (lambda h: re.sub(r'realm="[^"]*",', "", h), "realm is missing"),
    ],
)
def test_verify_refuses_malformed_headers(edit: object, reason: str) -> None:
    header = edit(_signed())  # type: ignore[operator]
    with pytest.raises(SignatureInvalid, match=reason):
        oauth1_cmac.verify("PUT", URL, BODY, header, **CREDS)


def test_parse_header_decodes_values() -> None:
    parsed = oauth1_cmac.parse_header('OAuth realm="http://h/x", a="b+c%7E", d="%2B"')
    assert parsed.realm == "http://h/x"
    assert parsed.params == {"a": "b c~", "d": "+"}
