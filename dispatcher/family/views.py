"""The family's one-page view of a call, opened from the link in their SMS (no login).

``GET /f/<token>``: what happened, where, and what is being done; three answers ("I'm
going", "I can't", "call me") posted to ``/f/<token>/answer`` land on the call's timeline.
A tampered, expired or closed-call link gets a plain page saying so, and a link for one
call never shows another. Server-rendered (no script), styled by the phone app's sheet.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from dispatcher.calls.context import DispatchContext, Outcome
from dispatcher.family.language import pick
from dispatcher.family.link import LinkClaims, LinkProblem, read_link
from dispatcher.family.service import ANSWERS, CallView, FamilyError, record_answer, view_of

CATALOGUES = Path(__file__).resolve().parents[1] / "responder" / "static" / "i18n"
TEXT = {
    "zh-CN": {
        "title": "CareCall 呼叫通知",
        "what": "发生了什么",
        "where": "地点",
        "status": "处理进度",
        "since": "呼叫时间",
        "responder": "正在前往的人员",
        "answer": "您的回复",
        "going": "我马上过去",
        "cannot": "我去不了",
        "call_me": "请给我回电话",
        "thanks": "已收到您的回复：{answer}。谢谢！",
        "bad": "这个链接无效（可能被修改过）。请直接联系服务站。",
        "expired": "这个链接已失效：呼叫已结束或已超过 24 小时。",
        "status.open": "等待服务站响应",
        "status.assigned": "已通知服务站",
        "status.acknowledged": "服务站已接警",
        "status.dispatched": "已派出人员",
        "status.en_route": "人员正在路上",
        "status.on_scene": "人员已到达",
    },
    "en": {
        "title": "CareCall alarm",
        "what": "What happened",
        "where": "Where",
        "status": "What is being done",
        "since": "Alarm raised",
        "responder": "On the way",
        "answer": "Your answer",
        "going": "I'm going",
        "cannot": "I can't",
        "call_me": "Call me",
        "thanks": "Your answer was recorded: {answer}. Thank you!",
        "bad": "This link is not valid (it may have been changed). Please call the care station.",
        "expired": "This link has expired: the call is closed or more than 24 hours old.",
        "status.open": "Waiting for the care station",
        "status.assigned": "The care station has been alerted",
        "status.acknowledged": "The care station has taken the call",
        "status.dispatched": "Someone has been sent",
        "status.en_route": "Someone is on the way",
        "status.on_scene": "Someone is there",
    },
}


@cache
def _events(lang: str) -> dict[str, str]:
    data = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
    return {k.removeprefix("event."): v for k, v in data.items() if k.startswith("event.")}


def language(request: Request) -> Literal["zh-CN", "en"]:
    return pick(request.headers.get("accept-language"), request.query_params.get("lang"))


def _page(lang: str, body: str, status: int = 200) -> HTMLResponse:
    t = TEXT[lang]
    return HTMLResponse(
        f"""<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">
<title>{html.escape(t["title"])}</title><link rel="stylesheet" href="/m/static/phone.css"></head>
<body><main class="card family">{body}</main></body></html>""",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _problem(lang: str, problem: LinkProblem | FamilyError) -> HTMLResponse:
    key = "expired" if problem in (LinkProblem.expired, FamilyError.closed) else "bad"
    return _page(
        lang,
        f"<h1>{html.escape(TEXT[lang]['title'])}</h1><p class='error'>{TEXT[lang][key]}</p>",
        410 if key == "expired" else 404,
    )


def _render(lang: str, token: str, view: CallView, answered: str | None) -> HTMLResponse:
    t = TEXT[lang]
    e = html.escape
    what = (
        "、".join(_events(lang).get(x, x) for x in view.event_types)
        if lang == "zh-CN"
        else ", ".join(_events(lang).get(x, x) for x in view.event_types)
    )
    rows = [
        f"<h1>{e(t['title'])}</h1>",
        f"<p><strong>{e(t['what'])}:</strong> {e(what)} — {e(view.resident_name)}</p>",
        f"<p><strong>{e(t['since'])}:</strong> {e(view.opened_local)}</p>",
        f"<p><strong>{e(t['where'])}:</strong> {e(view.address)}</p>",
        f"<p><strong>{e(t['status'])}:</strong> {e(t.get('status.' + view.status, view.status))} ({e(view.station_name)})</p>",
    ]
    if view.responders:
        rows.append(f"<p><strong>{e(t['responder'])}:</strong> {e('、'.join(view.responders))}</p>")
    if answered:
        rows.append(f"<p class='state'>{e(t['thanks'].format(answer=t.get(answered, answered)))}</p>")
    buttons = "".join(
        f"<button name='answer' value='{a}' class='{'primary' if a == 'going' else 'danger' if a == 'cannot' else ''} big'>{e(t[a])}</button>"
        for a in ANSWERS
    )
    rows.append(
        f"<form method='post' action='/f/{e(token)}/answer?lang={lang}' class='actions'>"
        f"<p class='wide'><strong>{e(t['answer'])}</strong></p>{buttons}</form>"
    )
    return _page(lang, "".join(rows))


def family_router(
    maker: async_sessionmaker[AsyncSession],
    key: bytes,
    *,
    clock: Clock,
    after_answer: Callable[[int], Awaitable[None]] | None = None,
    ctx: DispatchContext | None = None,
) -> APIRouter:
    """``ctx``: with it, "I can't" and "call me" tell the next contact at once (the
    contact ladder, dispatcher/calls/contacts.py)."""
    router = APIRouter(include_in_schema=False)

    async def claims_of(token: str, now: datetime) -> LinkClaims | LinkProblem:
        return read_link(key, token, now=now)

    @router.get("/f/{token}", response_class=HTMLResponse)
    async def family_page(token: str, request: Request, answered: str | None = None) -> HTMLResponse:
        lang = language(request)
        now = clock.now()
        claims = await claims_of(token, now)
        if isinstance(claims, LinkProblem):
            return _problem(lang, claims)
        async with maker() as s:
            view = await view_of(s, claims=claims)
        if isinstance(view, FamilyError):
            return _problem(lang, view)
        return _render(lang, token, view, answered if answered in ANSWERS else None)

    @router.post("/f/{token}/answer", response_model=None)
    async def family_answer(token: str, request: Request) -> HTMLResponse | RedirectResponse:
        lang = language(request)
        # a plain HTML form (application/x-www-form-urlencoded), read without a multipart parser
        form = parse_qs((await request.body())[:256].decode("ascii", "replace"))
        answer = (form.get("answer") or [""])[0]
        now = clock.now()
        claims = await claims_of(token, now)
        if isinstance(claims, LinkProblem):
            return _problem(lang, claims)
        if answer not in ANSWERS:
            return _problem(lang, FamilyError.unknown)
        async with maker() as s, s.begin():
            result = await record_answer(s, claims=claims, answer=answer, now=now, ctx=ctx, out=Outcome())
        if isinstance(result, FamilyError):
            return _problem(lang, result)
        if after_answer is not None:
            await after_answer(claims.call_id)
        return RedirectResponse(f"/f/{token}?lang={lang}&answered={answer}", status_code=303)

    return router
