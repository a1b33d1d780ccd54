"""Local stand-ins for the vendors: one aiohttp server on 127.0.0.1 (random port) that
checks each request's signature the way the vendor documents it and answers in the
vendor's documented shape. Tests script the answers per action; every accepted request
is kept for assertions.

* Alibaba Cloud (``x-acs-action`` header): V3 signature ACS3-HMAC-SHA256 — canonical
  request of method, path, sorted RFC 3986 query, the signed headers and the body's
  SHA-256 (which must match ``x-acs-content-sha256``); a used nonce or a date more than
  15 minutes off is refused, as the gateway does.
* Tencent Cloud (``X-TC-Action``): TC3-HMAC-SHA256 with the derived key chain
  (``TC3<key>`` → date → service → ``tc3_request``); a timestamp more than 5 minutes off
  is ``AuthFailure.SignatureExpire``.
* The generic gateway (``/gateway``): ``sha256=`` HMAC of ``<timestamp>.<body>``.
* DingTalk (``/robot/send``): ``timestamp`` + ``sign`` query (HMAC-SHA256 of
  ``<ts>\\n<secret>``, base64), within one hour; Feishu (``/open-apis/bot/v2/hook/…``):
  ``timestamp`` + ``sign`` in the body; WeCom (``/cgi-bin/webhook/send``): the ``key``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

ALIYUN_KEYS = {"LTAI-test-key": "aliyun-test-secret"}
TENCENT_KEYS = {"AKID-test-id": "tencent-test-key"}
GATEWAY_SECRET = "gateway-test-secret"
DINGTALK = {"token": "ding-token", "secret": "SEC-ding-secret"}
FEISHU = {"hook": "feishu-hook-id", "secret": "feishu-secret"}
WECOM_KEY = "wecom-key"


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    # exactly "application/json": the Tencent SDK parses errors only for that content type
    return web.Response(
        status=status,
        body=json.dumps(data, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json"},
    )


def _hex_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    vendor: str
    action: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeVendors:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why signatures were refused
    _script: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    _nonces: set[str] = field(default_factory=set)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def script(self, action: str, *outcomes: str) -> None:
        """The next answers to ``action`` (SendSms, SingleCallByTts, tencent:SendSms, …);
        unscripted requests succeed."""
        self._script[action].extend(outcomes)

    def _next(self, action: str) -> str:
        queue = self._script[action]
        return queue.popleft() if queue else "ok"

    def of(self, vendor: str, action: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.vendor == vendor and (action is None or s.action == action)]

    # --- dispatch ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if "x-acs-action" in request.headers:
            return self._aliyun(request, body)
        if "X-TC-Action" in request.headers:
            return self._tencent(request, body)
        if request.path == "/gateway":
            return self._gateway(request, body)
        if request.path == "/robot/send":
            return self._dingtalk(request, body)
        if request.path.startswith("/open-apis/bot/v2/hook/"):
            return self._feishu(request, body)
        if request.path == "/cgi-bin/webhook/send":
            return self._wecom(request, body)
        return web.Response(status=404)

    # --- Alibaba Cloud ---------------------------------------------------------------

    def _aliyun_signature_problem(self, request: web.Request, body: bytes) -> tuple[str, str] | None:
        auth = request.headers.get("Authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "ACS3-HMAC-SHA256":
            return "IncompleteSignature", f"unsupported algorithm {algorithm!r}"
        fields = dict(part.split("=", 1) for part in rest.split(","))
        secret = ALIYUN_KEYS.get(fields.get("Credential", ""))
        if secret is None:
            return "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        signed = fields.get("SignedHeaders", "").split(";")
        for required in (
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        ):
            if required not in signed:
                return "IncompleteSignature", f"{required} is not signed"
        if request.headers["x-acs-content-sha256"] != _hex_sha256(body):
            return "SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body"
        date = datetime.strptime(request.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if abs(time.time() - date.timestamp()) > 900:
            return "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        nonce = request.headers["x-acs-signature-nonce"]
        if nonce in self._nonces:
            return "SignatureNonceUsed", "Specified signature nonce was used already."
        query = urllib.parse.parse_qsl(request.query_string, keep_blank_values=True)
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(query)
        )
        canonical_headers = "".join(f"{h}:{request.headers.get(h, '').strip()}\n" for h in signed)
        canonical = "\n".join(
            [
                request.method,
                request.path or "/",
                canonical_query,
                canonical_headers,
                ";".join(signed),
                request.headers["x-acs-content-sha256"],
            ]
        )
        to_sign = f"ACS3-HMAC-SHA256\n{_hex_sha256(canonical.encode())}"
        expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
        self._nonces.add(nonce)
        return None

    def _aliyun(self, request: web.Request, body: bytes) -> web.Response:
        request_id = str(uuid.uuid4()).upper()
        problem = self._aliyun_signature_problem(request, body)
        if problem is not None:
            self.refused.append(problem[0])
            return _json(
                {
                    "RequestId": request_id,
                    "Code": problem[0],
                    "Message": problem[1],
                    "HostId": "dysmsapi.aliyuncs.com",
                },
                status=400 if problem[0] != "InvalidAccessKeyId.NotFound" else 404,
            )
        action = request.headers["x-acs-action"]
        params = dict(urllib.parse.parse_qsl(request.query_string, keep_blank_values=True))
        if body and request.content_type == "application/x-www-form-urlencoded":
            params |= dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        self.seen.append(Seen("aliyun", action, params, dict(request.headers)))
        outcome = self._next(action)
        if outcome == "api_throttled":  # the gateway's own flow control: HTTP 400
            return _json(
                {
                    "RequestId": request_id,
                    "Code": "Throttling.User",
                    "Message": "Request was denied due to user flow control.",
                },
                400,
            )
        if outcome == "server_error":
            return _json(
                {
                    "RequestId": request_id,
                    "Code": "InternalError",
                    "Message": "The request processing has failed due to some unknown error.",
                },
                500,
            )
        if action == "SendSms":
            for key in ("PhoneNumbers", "SignName", "TemplateCode"):
                if not params.get(key):
                    return _json(
                        {
                            "RequestId": request_id,
                            "Code": "isv.INVALID_PARAMETERS",
                            "Message": f"{key} is mandatory",
                        }
                    )
            json.loads(params.get("TemplateParam", "{}"))
            if outcome == "throttled":
                return _json(
                    {
                        "RequestId": request_id,
                        "Code": "isv.BUSINESS_LIMIT_CONTROL",
                        "Message": "触发分钟级流控Permits:1",
                    }
                )
            if outcome == "bad_template":
                return _json(
                    {
                        "RequestId": request_id,
                        "Code": "isv.SMS_TEMPLATE_ILLEGAL",
                        "Message": "该账号下找不到对应模板",
                    }
                )
            return _json(
                {
                    "RequestId": request_id,
                    "Code": "OK",
                    "Message": "OK",
                    "BizId": f"{int(time.time() * 1000)}^0",
                }
            )
        if action == "SingleCallByTts":
            for key in ("CalledNumber", "TtsCode"):
                if not params.get(key):
                    return _json(
                        {
                            "RequestId": request_id,
                            "Code": "isv.INVALID_PARAMETERS",
                            "Message": f"{key} is mandatory",
                        }
                    )
            if outcome == "throttled":
                return _json(
                    {
                        "RequestId": request_id,
                        "Code": "isv.BUSINESS_LIMIT_CONTROL",
                        "Message": "触发号码天级流控",
                    }
                )
            if outcome == "bad_template":
                return _json(
                    {
                        "RequestId": request_id,
                        "Code": "isv.TEMPLATE_ILLEGAL",
                        "Message": "文本转语音模板不合法",
                    }
                )
            return _json(
                {
                    "RequestId": request_id,
                    "Code": "OK",
                    "Message": "OK",
                    "CallId": f"116012354148^{int(time.time())}",
                }
            )
        return _json(
            {
                "RequestId": request_id,
                "Code": "InvalidAction.NotFound",
                "Message": "Specified api is not found",
            },
            404,
        )

    # --- Tencent Cloud ---------------------------------------------------------------

    def _tencent_signature_problem(self, request: web.Request, body: bytes) -> tuple[str, str] | None:
        auth = request.headers.get("Authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "TC3-HMAC-SHA256":
            return "AuthFailure.InvalidAuthorization", "Authorization is not TC3-HMAC-SHA256"
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        secret_id, date, service, terminator = fields["Credential"].split("/")
        key = TENCENT_KEYS.get(secret_id)
        if key is None:
            return "AuthFailure.SecretIdNotFound", "The SecretId is not found"
        timestamp = int(request.headers.get("X-TC-Timestamp", "0"))
        if abs(time.time() - timestamp) > 300:
            return "AuthFailure.SignatureExpire", "Signature expired"
        if datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") != date or terminator != "tc3_request":
            return "AuthFailure.InvalidAuthorization", "credential scope does not match the timestamp"
        signed = fields["SignedHeaders"].split(";")
        if "host" not in signed or "content-type" not in signed:
            return "AuthFailure.InvalidAuthorization", "host and content-type must be signed"
        canonical_headers = "".join(f"{h}:{request.headers.get(h, '').strip().lower()}\n" for h in signed)
        canonical = "\n".join(
            [
                request.method,
                request.path,
                request.query_string,
                canonical_headers,
                ";".join(signed),
                _hex_sha256(body),
            ]
        )
        scope = f"{date}/{service}/tc3_request"
        to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{_hex_sha256(canonical.encode())}"

        def mac(k: bytes, msg: str) -> bytes:
            return hmac.new(k, msg.encode(), hashlib.sha256).digest()

        signing = mac(mac(mac(("TC3" + key).encode(), date), service), "tc3_request")
        expected = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
        return None

    def _tencent(self, request: web.Request, body: bytes) -> web.Response:
        request_id = str(uuid.uuid4())
        problem = self._tencent_signature_problem(request, body)
        if problem is not None:
            self.refused.append(problem[0])
            return _json(
                {"Response": {"Error": {"Code": problem[0], "Message": problem[1]}, "RequestId": request_id}}
            )
        action = request.headers["X-TC-Action"]
        service = {"2021-01-11": "sms", "2020-09-02": "vms"}.get(request.headers.get("X-TC-Version", ""), "?")
        params = json.loads(body or b"{}")
        self.seen.append(Seen("tencent", f"{service}:{action}", params, dict(request.headers)))
        outcome = self._next(f"tencent:{service}:{action}")

        def error(code: str, message: str) -> web.Response:
            return _json({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}})

        if outcome == "api_throttled":
            return error("RequestLimitExceeded", "The number of requests exceeds the frequency limit.")
        if outcome == "bad_template":
            return error(
                "FailedOperation.TemplateIncorrectOrUnapproved",
                "template is not approved or request content does not match the approved template content",
            )
        if service == "sms" and action == "SendSms":
            numbers = params.get("PhoneNumberSet") or []
            if not numbers or not params.get("SmsSdkAppId") or not params.get("TemplateId"):
                return error(
                    "MissingParameter.EmptyPhoneNumberSet",
                    "PhoneNumberSet, SmsSdkAppId and TemplateId are required",
                )
            code, message = ("Ok", "send success")
            if outcome == "throttled":
                code, message = (
                    "LimitExceeded.PhoneNumberDailyLimit",
                    "the number of SMS messages sent from a single mobile number every day exceeds the upper limit",
                )
            return _json(
                {
                    "Response": {
                        "SendStatusSet": [
                            {
                                "SerialNo": f"2640:{uuid.uuid4().int % 10**18}",
                                "PhoneNumber": n,
                                "Fee": 1,
                                "SessionContext": params.get("SessionContext", ""),
                                "Code": code,
                                "Message": message,
                                "IsoCode": "CN",
                            }
                            for n in numbers
                        ],
                        "RequestId": request_id,
                    }
                }
            )
        if service == "vms" and action == "SendTtsVoice":
            if outcome == "throttled":
                return error("LimitExceeded.DeliveryFrequencyLimit", "delivery frequency limit")
            return _json(
                {
                    "Response": {
                        "SendStatus": {
                            "CallId": str(uuid.uuid4()),
                            "SessionContext": params.get("SessionContext", ""),
                        },
                        "RequestId": request_id,
                    }
                }
            )
        return error("InvalidAction", f"{action} is not a valid action")

    # --- generic gateway and robots ---------------------------------------------------

    def _gateway(self, request: web.Request, body: bytes) -> web.Response:
        timestamp = request.headers.get("X-CareCall-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(GATEWAY_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        if (
            not hmac.compare_digest(expected, request.headers.get("X-CareCall-Signature", ""))
            or abs(time.time() - int(timestamp or 0)) > 300
        ):
            self.refused.append("gateway-signature")
            return _json({"error": "bad signature"}, 401)
        params = json.loads(body)
        self.seen.append(Seen("gateway", "send", params, dict(request.headers)))
        outcome = self._next("gateway")
        if outcome == "throttled":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0.05"})
        if outcome == "server_error":
            return web.Response(status=503, text="unavailable")
        if outcome == "bad_template":
            return _json({"error": "unknown template"}, 422)
        return _json({"id": f"gw-{params['id']}"}, 202)

    def _dingtalk(self, request: web.Request, body: bytes) -> web.Response:
        if request.query.get("access_token") != DINGTALK["token"]:
            return _json({"errcode": 300001, "errmsg": "token is not exist"})
        timestamp = request.query.get("timestamp", "")
        expected = base64.b64encode(
            hmac.new(
                DINGTALK["secret"].encode(), f"{timestamp}\n{DINGTALK['secret']}".encode(), hashlib.sha256
            ).digest()
        ).decode()
        if (
            not timestamp
            or abs(time.time() * 1000 - int(timestamp)) > 3_600_000
            or not hmac.compare_digest(expected, request.query.get("sign", ""))
        ):
            self.refused.append("dingtalk-sign")
            return _json(
                {
                    "errcode": 310000,
                    "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
                }
            )
        payload = json.loads(body)
        self.seen.append(Seen("dingtalk", "send", payload, dict(request.headers)))
        if self._next("dingtalk") == "throttled":
            return _json(
                {"errcode": 130101, "errmsg": "[ERR_SEND_TOO_FAST] send too fast, exceed 20 times per minute"}
            )
        return _json({"errcode": 0, "errmsg": "ok"})

    def _feishu(self, request: web.Request, body: bytes) -> web.Response:
        if request.path.rstrip("/").rsplit("/", 1)[-1] != FEISHU["hook"]:
            return _json({"code": 19001, "msg": "param invalid: incoming webhook access token invalid"})
        payload = json.loads(body)
        timestamp = str(payload.get("timestamp", ""))
        expected = base64.b64encode(
            hmac.new(f"{timestamp}\n{FEISHU['secret']}".encode(), b"", hashlib.sha256).digest()
        ).decode()
        if (
            not timestamp
            or abs(time.time() - int(timestamp)) > 3600
            or not hmac.compare_digest(expected, str(payload.get("sign", "")))
        ):
            self.refused.append("feishu-sign")
            return _json(
                {
                    "code": 19021,
                    "msg": "sign match fail or timestamp is not within one hour from current time",
                }
            )
        self.seen.append(Seen("feishu", "send", payload, dict(request.headers)))
        if self._next("feishu") == "throttled":
            return _json({"code": 11232, "msg": "frequency limited psm"})
        return _json({"code": 0, "msg": "success", "data": {}})

    def _wecom(self, request: web.Request, body: bytes) -> web.Response:
        if request.query.get("key") != WECOM_KEY:
            return _json({"errcode": 93000, "errmsg": "invalid webhook url, hint: [1700000000_1_abc]"})
        payload = json.loads(body)
        self.seen.append(Seen("wecom", "send", payload, dict(request.headers)))
        if self._next("wecom") == "throttled":
            return _json({"errcode": 45009, "errmsg": "api freq out of limit"})
        return _json({"errcode": 0, "errmsg": "ok"})


async def start_fake_vendors() -> tuple[FakeVendors, web.AppRunner]:
    fake = FakeVendors()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.port = int(runner.addresses[0][1])
    return fake, runner
