"""A fake Discord on 127.0.0.1: the REST routes and the websocket gateway an unmodified discord.py bot uses.

The bot is pointed here only from the test side (`redirect_discord_py`: `discord.http.Route.BASE` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`). The fake pushes real INTERACTION_CREATE payloads down the
gateway and records every REST call the bot makes, with a timestamp, its JSON body and any uploaded files, so
tests can check what the bot really sent: deferrals, ephemeral flags, followups, attachments.

It enforces what Discord documents (and refuses what real Discord refuses), so a bot that passes here does not
rely on leniency:
- the initial response within 3 seconds (else 404, 10062 Unknown interaction), only once (else 400, 40060);
- the interaction token works for 15 minutes (then 401, 50027 Invalid Webhook Token);
- after a deferral, the first followup takes the "thinking..." message's place and its visibility, whatever its
  own flags say; after the deferred message was deleted, that followup answers 404, 10008 Unknown Message (what
  Discord has answered to this undocumented sequence);
- content at most 2,000 characters, custom_id 1-100, button label at most 80, link URL at most 512, no empty
  message (400, 50035 / 50006); at most 10 attachments, each within `attachment_size_limit` (413, 40005);
- interaction webhooks are rate-limited per token: 429 with `retry_after` (and the `Via` header real Discord
  sends, without which discord.py treats a 429 as a Cloudflare ban), plus X-RateLimit headers on every answer.
The store (SKUs, entitlements, their routes and gateway events, premium buttons) is in `fake_store.py`.
It also keeps what the channel saw: `public_log` holds every content a public message ever showed, and
`visible(token)` the public messages of an interaction that still exist.

Usable from one event loop (the bench) or, through `tests.discordbot.harness`, from a synchronous test.
"""

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yarl
from aiohttp import WSMsgType, web

from tests.discordbot.fake_store import STORE_ROUTE_NAMES, STORE_ROUTES, FakeStore

API_PREFIX = "/api/v10"
EPHEMERAL = 1 << 6
LOADING = 1 << 7
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Interaction callback types (https://discord.com/developers/docs/interactions/receiving-and-responding)
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
MODAL = 9
MODAL_SUBMIT = 5  # interaction type

INITIAL_RESPONSE_SECONDS = 3.0
TOKEN_LIFETIME_SECONDS = 15 * 60
MAX_CONTENT = 2000
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
MAX_URL = 512
MAX_ATTACHMENTS = 10
# Interaction webhook bucket: this many requests per token per window (Discord's usual webhook limit is 5 / 2 s).
WEBHOOK_RATE = (5, 2.0)


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def is_png(self) -> bool:
        return self.data.startswith(PNG_MAGIC)


@dataclass
class Call:
    """One REST request the bot made."""

    route: str  # users_me, app_info, gateway, sync_commands, callback, followup, edit_message, delete_message, ...
    method: str
    path: str  # after /api/v10
    query: dict[str, str]
    json: dict[str, Any] | None
    uploads: list[Upload]
    at: float  # time.monotonic()
    token: str | None = None  # the interaction token, for callbacks and webhook calls
    message_id: str | None = None  # for webhook message routes ("@original" or an id)
    status: int = 200

    @property
    def flags(self) -> int:
        body = self.json or {}
        if self.route == "callback":
            body = body.get("data") or {}
        return int(body.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def content(self) -> str:
        body = self.json or {}
        if self.route == "callback":
            body = body.get("data") or {}
        return body.get("content") or ""

    @property
    def components(self) -> list[dict]:
        body = self.json or {}
        if self.route == "callback":
            body = body.get("data") or {}
        return body.get("components") or []

    @property
    def buttons(self) -> list[dict]:
        return [item for row in self.components for item in row.get("components", []) if item.get("type") == 2]


@dataclass
class Sent:
    """An interaction the fake pushed down the gateway."""

    id: int
    token: str
    user_id: int
    at: float
    payload: dict[str, Any] = field(repr=False)


@dataclass
class Failure:
    """Answer the next matching call(s) with an error instead."""

    matches: Callable[[Call], bool]
    status: int
    code: int
    message: str
    times: int = 1
    retry_after: float | None = None  # a 429 as Discord sends it


@dataclass
class Hold:
    """Apply the next matching call, but answer it only after `seconds` (an upload whose answer is slow)."""

    matches: Callable[[Call], bool]
    seconds: float
    times: int = 1
    applied_first: bool = True  # False: wait first, and apply only if the client is still there


@dataclass
class Drop:
    """Drop the connection of the next matching call without answering: after applying it (the request reached
    Discord, the answer was lost) or before (it never arrived)."""

    matches: Callable[[Call], bool]
    applied: bool
    times: int = 1


@dataclass
class MessageState:
    token: str | None  # the interaction that made it
    ephemeral: bool
    loading: bool = False  # a deferral's "thinking..." message, not yet resolved
    deleted: bool = False


class Refused(Exception):
    """What Discord answers instead: status, JSON error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Attachment:
    """A file a member attached to a command option: where Discord's CDN serves it, and what Discord says of it."""

    url: str
    filename: str
    size: int
    content_type: str | None = "image/png"
    width: int | None = None
    height: int | None = None

    def payload(self, attachment_id: str) -> dict:
        data = {
            "id": attachment_id,
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "ephemeral": True,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.width is not None:
            data.update(width=self.width, height=self.height)
        return data


@dataclass(frozen=True)
class UserOption:
    """A user option's value (type 6): sent as the id, with the user and their member under `resolved`."""

    id: int


@dataclass(frozen=True)
class RoleOption:
    """A role option's value (type 8): sent as the id, with the role under `resolved.roles`."""

    id: int


@dataclass(frozen=True)
class ChannelOption:
    """A channel option's value (type 7): sent as the id, with the channel under `resolved.channels`."""

    id: int


# Discord permission bits (https://discord.com/developers/docs/topics/permissions)
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
# What a plain member may do in the fake's channel (no Administrator, no Manage Server): the fake's default.
MEMBER_PERMISSIONS = 2248473465835073


def _snowflakes() -> itertools.count:
    # Real-looking snowflakes: milliseconds since the Discord epoch, shifted.
    return itertools.count(int(time.time() * 1000 - 1420070400000) << 22)


class FakeDiscord(FakeStore):
    APP_ID = 1_300_000_000_000_000_001
    BOT_ID = 1_300_000_000_000_000_001  # a bot's user id is its application id
    OWNER_ID = 1_300_000_000_000_000_099
    GUILD_ID = 1_300_000_000_000_000_010
    CHANNEL_ID = 1_300_000_000_000_000_020

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.sent: list[Sent] = []
        self.identifies = 0
        self.failures: list[Failure] = []
        self.commands: dict[str, list[dict]] = {}
        self.messages: dict[str, dict] = {}  # message id -> message payload
        self.states: dict[str, MessageState] = {}  # message id -> visibility and life
        self.originals: dict[str, str] = {}  # interaction token -> original response message id
        self.acknowledged: set[str] = set()  # tokens whose initial response was given
        self.public_log: list[tuple[str, str | None, str]] = []  # (message id, token, content) the channel saw
        self.holds: list[Hold] = []
        self.drops: list[Drop] = []
        self.token_lifetime = TOKEN_LIFETIME_SECONDS
        self.initial_response_seconds = INITIAL_RESPONSE_SECONDS
        self.webhook_rate = WEBHOOK_RATE
        self.modals: dict[str, dict] = {}  # token of the interaction a modal answered -> the modal
        self.cdn_files: dict[str, Upload] = {}  # attachment id -> the file a message carries
        self.cdn_requests: list[str] = []
        self.attachment_size_limit = 10 * 1024 * 1024  # sent in each interaction payload, and enforced
        # Per member, as Discord computes them for the interaction's channel: role ids and permission bits.
        self.member_roles: dict[int, list[int]] = {}
        self.member_permissions: dict[int, int] = {}
        self.rate_limited = 0  # 429s answered
        self._webhook_hits: dict[str, list[float]] = {}
        self._ids = _snowflakes()
        self._cond = threading.Condition()  # wakes synchronous waiters in other threads
        self._changed: asyncio.Event | None = None  # wakes waiters on the server's own loop
        self._sockets: dict[web.WebSocketResponse, itertools.count] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._store_init()  # SKUs and entitlements (fake_store.py)

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)  # attachments are multipart bodies of MiBs
        app.router.add_get("/gateway-ws", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> yarl.URL:
        return yarl.URL(f"ws://127.0.0.1:{self.port}/gateway-ws")

    @property
    def connected(self) -> int:
        return len(self._sockets)

    # --- what tests read ---------------------------------------------------------------------------------------

    def snapshot(self) -> list[Call]:
        with self._cond:
            return list(self.calls)

    def calls_for(self, token: str) -> list[Call]:
        return [call for call in self.snapshot() if call.token == token]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """From another thread: wait until `predicate()` is truthy (re-checked on every recorded event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"gave up after {timeout} s; calls so far: {self._describe()}")
                self._cond.wait(min(remaining, 0.25))

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """On the fake's own loop: the same, without blocking it."""
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()

    def _describe(self) -> str:
        return ", ".join(f"{c.method} {c.route}({c.status})" for c in self.calls[-30:])

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._changed is not None:
            self._changed.set()

    def fail(
        self,
        matches: Callable[[Call], bool],
        *,
        status: int = 400,
        code: int = 50035,
        message: str = "Invalid Form Body",
        times: int = 1,
    ) -> None:
        """Make the next `times` calls for which `matches(call)` holds fail with this error."""
        self.failures.append(Failure(matches, status, code, message, times))

    def rate_limit(self, matches: Callable[[Call], bool], *, retry_after: float = 0.3, times: int = 1) -> None:
        """Answer the next `times` matching calls with a 429 (a shared or sub-limit: remaining > 0, as Discord
        does when a limit the headers did not announce is hit)."""
        self.failures.append(Failure(matches, 429, 0, "You are being rate limited.", times, retry_after))

    def hold(
        self, matches: Callable[[Call], bool], *, seconds: float, times: int = 1, applied_first: bool = True
    ) -> None:
        """Apply the next `times` matching calls at once but answer them only after `seconds`; or, with
        `applied_first=False`, wait first and apply only if the caller is still connected (a request that never
        fully reached Discord when its sender died)."""
        self.holds.append(Hold(matches, seconds, times, applied_first))

    def drop(self, matches: Callable[[Call], bool], *, applied: bool, times: int = 1) -> None:
        """Close the connection of the next `times` matching calls without an answer (see `Drop`)."""
        self.drops.append(Drop(matches, applied, times))

    def visible(self, token: str) -> list[dict]:
        """The public messages an interaction made that are still in the channel."""
        return [
            self.messages[mid]
            for mid, state in self.states.items()
            if state.token == token and not state.ephemeral and not state.deleted
        ]

    def private(self, token: str) -> list[dict]:
        """The ephemeral messages an interaction made (only its member sees them), in order."""
        return [self.messages[mid] for mid, state in self.states.items() if state.token == token and state.ephemeral]

    def channel_saw(self, text: str) -> bool:
        """Did any public message ever show `text`?"""
        return any(text in content for _, _, content in self.public_log)

    def rest_calls(self, tokens: set[str] | None = None) -> list[Call]:
        """REST calls the bot made for interactions (all, or those of `tokens`), failed ones included."""
        return [c for c in self.snapshot() if c.token is not None and (tokens is None or c.token in tokens)]

    # --- what tests do -----------------------------------------------------------------------------------------

    def user_payload(self, user_id: int) -> dict:
        return {
            "id": str(user_id),
            "username": f"member{user_id % 10000}",
            "discriminator": "0",
            "global_name": f"Member {user_id % 10000}",
            "avatar": None,
            "public_flags": 0,
        }

    def member_payload(self, user_id: int) -> dict:
        return {
            "user": self.user_payload(user_id),
            "roles": [str(role) for role in self.member_roles.get(user_id, [])],
            "flags": 0,
            "permissions": str(self.member_permissions.get(user_id, MEMBER_PERMISSIONS)),
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
        }

    def _interaction_base(
        self, *, user_id: int, kind: int, data: dict, in_guild: bool, channel_id: int | None = None
    ) -> tuple[dict, str]:
        interaction_id = next(self._ids)
        channel_id = channel_id or self.CHANNEL_ID
        token = f"itok-{interaction_id}-{user_id}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.APP_ID),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.GUILD_ID)} if in_guild else {"1": str(user_id)},
            "context": 0 if in_guild else 1,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if in_guild:
            payload.update(
                guild_id=str(self.GUILD_ID),
                guild_locale="en-US",
                guild={"id": str(self.GUILD_ID), "locale": "en-US", "features": []},
                channel_id=str(channel_id),
                channel={
                    "id": str(channel_id),
                    "type": 0,
                    "guild_id": str(self.GUILD_ID),
                    "name": "images",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "rate_limit_per_user": 0,
                    "topic": None,
                    "last_message_id": None,
                    "flags": 0,
                    "permissions": "2248473465835073",
                },
                member=self.member_payload(user_id),
            )
        else:
            dm_channel = next(self._ids)
            payload.update(
                channel_id=str(dm_channel),
                channel={"id": str(dm_channel), "type": 1, "recipients": [self.user_payload(user_id)]},
                user=self.user_payload(user_id),
            )
        return payload, token

    async def send_command(
        self,
        name: str,
        *,
        user_id: int,
        options: dict[str, Any] | None = None,
        in_guild: bool = True,
        channel_id: int | None = None,
    ) -> Sent:
        """Push a slash command (INTERACTION_CREATE, type 2) as a member would trigger it.

        Option values keep Discord's types: str (3), bool (5), int (4); an `Attachment` (11) is sent as its id,
        with the file described under `resolved.attachments`, as Discord does; so are a `UserOption` (6, with
        `resolved.users` and `.members`), a `RoleOption` (8, `resolved.roles`) and a `ChannelOption` (7,
        `resolved.channels`). "group sub" names a subcommand: sent as the group with one option of type 1."""
        wire_options, resolved = [], {}
        others: dict[str, dict] = {}
        for key, value in (options or {}).items():
            if isinstance(value, Attachment):
                attachment_id = str(next(self._ids))
                resolved[attachment_id] = value.payload(attachment_id)
                wire_options.append({"name": key, "type": 11, "value": attachment_id})
            elif isinstance(value, UserOption):
                others.setdefault("users", {})[str(value.id)] = self.user_payload(value.id)
                member = self.member_payload(value.id)
                del member["user"]
                others.setdefault("members", {})[str(value.id)] = member
                wire_options.append({"name": key, "type": 6, "value": str(value.id)})
            elif isinstance(value, RoleOption):
                others.setdefault("roles", {})[str(value.id)] = {
                    "id": str(value.id),
                    "name": f"role{value.id % 1000}",
                    "color": 0,
                    "hoist": False,
                    "position": 1,
                    "permissions": "0",
                    "managed": False,
                    "mentionable": True,
                    "flags": 0,
                }
                wire_options.append({"name": key, "type": 8, "value": str(value.id)})
            elif isinstance(value, ChannelOption):
                others.setdefault("channels", {})[str(value.id)] = {
                    "id": str(value.id),
                    "name": f"channel{value.id % 1000}",
                    "type": 0,
                    "permissions": str(MEMBER_PERMISSIONS),
                    "guild_id": str(self.GUILD_ID),
                }
                wire_options.append({"name": key, "type": 7, "value": str(value.id)})
            elif isinstance(value, bool):
                wire_options.append({"name": key, "type": 5, "value": value})
            elif isinstance(value, int):
                wire_options.append({"name": key, "type": 4, "value": value})
            else:
                wire_options.append({"name": key, "type": 3, "value": value})
        group, _, sub = name.partition(" ")
        if sub:
            wire_options = [{"name": sub, "type": 1, "options": wire_options}]
        data = {
            "id": str(abs(hash(group)) % 10**18),
            "name": group,
            "type": 1,
            "options": wire_options,
        }
        if resolved or others:
            data["resolved"] = {**({"attachments": resolved} if resolved else {}), **others}
        if in_guild:
            data["guild_id"] = str(self.GUILD_ID)
        payload, token = self._interaction_base(
            user_id=user_id, kind=2, data=data, in_guild=in_guild, channel_id=channel_id
        )
        return await self._push_interaction(payload, token, user_id)

    async def click_button(self, *, user_id: int, custom_id: str, message_id: str) -> Sent:
        """Push a button click (INTERACTION_CREATE, type 3) on a message the bot posted."""
        data = {"custom_id": custom_id, "component_type": 2}
        payload, token = self._interaction_base(user_id=user_id, kind=3, data=data, in_guild=True)
        payload["message"] = self.messages[message_id]
        return await self._push_interaction(payload, token, user_id)

    async def submit_modal(self, *, user_id: int, opened_by: str, values: dict[str, str]) -> Sent:
        """Submit the modal the bot opened in answer to interaction `opened_by` (a token), with these values for
        its text inputs, as Discord sends it (INTERACTION_CREATE, type 5)."""
        modal = self.modals[opened_by]
        rows = []
        for row in modal["components"]:
            for item in row.get("components") or [row.get("component")]:
                custom_id = item["custom_id"]
                rows.append(
                    {"type": 1, "components": [{"type": 4, "custom_id": custom_id, "value": values[custom_id]}]}
                )
        data = {"custom_id": modal["custom_id"], "components": rows}
        payload, token = self._interaction_base(user_id=user_id, kind=MODAL_SUBMIT, data=data, in_guild=True)
        opener = self._sent_for(opened_by)
        if opener is not None and "message" in opener.payload:
            payload["message"] = opener.payload["message"]
        return await self._push_interaction(payload, token, user_id)

    async def _push_interaction(self, payload: dict, token: str, user_id: int) -> Sent:
        sent = Sent(id=int(payload["id"]), token=token, user_id=user_id, at=time.monotonic(), payload=payload)
        with self._cond:
            self.sent.append(sent)
        await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    async def dispatch(self, event: str, data: dict) -> None:
        if not self._sockets:
            raise RuntimeError("no bot is connected to the fake gateway")
        for ws, seq in list(self._sockets.items()):
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(seq), "d": data}))

    # --- the gateway ----------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                packet = json.loads(msg.data)
                op = packet.get("op")
                if op == 1:  # heartbeat
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:  # identify
                    seq = itertools.count(1)
                    ready = {
                        "v": 10,
                        "user": {**self.user_payload(self.BOT_ID), "username": "ImageCredits", "bot": True},
                        "guilds": [],
                        "session_id": f"fake-session-{next(self._ids)}",
                        "resume_gateway_url": str(self.gateway_url),
                        "application": {"id": str(self.APP_ID), "flags": 0},
                        "private_channels": [],
                        "relationships": [],
                    }
                    await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(seq), "d": ready}))
                    with self._cond:
                        self._sockets[ws] = seq
                        self.identifies += 1
                    self._notify()
                elif op == 6:  # resume: not supported, so ask for a fresh identify
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
        finally:
            with self._cond:
                self._sockets.pop(ws, None)
            self._notify()
        return ws

    # --- REST ---------------------------------------------------------------------------------------------------

    _ROUTES = [
        ("GET", r"/users/@me", "users_me"),
        ("GET", r"/oauth2/applications/@me", "app_info"),
        ("GET", r"/gateway(/bot)?", "gateway"),
        ("PUT", r"/applications/(?P<app>\d+)(/guilds/(?P<guild>\d+))?/commands", "sync_commands"),
        ("GET", r"/applications/(?P<app>\d+)(/guilds/(?P<guild>\d+))?/commands", "list_commands"),
        ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", "callback"),
        ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", "followup"),
        ("PATCH", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>[^/]+)", "edit_message"),
        ("DELETE", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>[^/]+)", "delete_message"),
        ("GET", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>[^/]+)", "get_message"),
        ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", "channel_message"),
        *STORE_ROUTES,
    ]

    async def _cdn(self, request: web.Request) -> web.Response:
        upload = self.cdn_files.get(request.match_info["id"])
        self.cdn_requests.append(request.path)
        if upload is None or upload.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=upload.data, headers={"Content-Type": "image/png" if upload.is_png else upload.content_type}
        )

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.path[len(API_PREFIX) :]
        route, params = "unknown", {}
        for method, pattern, name in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                route, params = name, match.groupdict()
                break
        body, uploads = await self._read_body(request)
        call = Call(
            route=route,
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body,
            uploads=uploads,
            at=time.monotonic(),
            token=params.get("token"),
            message_id=params.get("message"),
        )
        headers: dict[str, str] = {}
        drop = next((d for d in self.drops if d.times > 0 and d.matches(call)), None)
        if drop is not None:
            drop.times -= 1
            if drop.applied:
                self._answer(call, params)
            call.status = 0  # no answer
            with self._cond:
                self.calls.append(call)
            self._notify()
            request.transport.close()
            return web.Response(status=204)
        hold = next((h for h in self.holds if h.times > 0 and h.matches(call)), None)
        if hold is not None and not hold.applied_first:
            hold.times -= 1
            await asyncio.sleep(hold.seconds)
            if request.transport is None or request.transport.is_closing():
                call.status = 0  # the sender went away before the request was complete: nothing happened
                with self._cond:
                    self.calls.append(call)
                self._notify()
                return web.Response(status=204)
            hold = None
        failure = next((f for f in self.failures if f.times > 0 and f.matches(call)), None)
        if failure is not None and failure.retry_after is not None:
            failure.times -= 1
            call.status = 429
            self.rate_limited += 1
            headers = {"Via": "1.1 google", "X-RateLimit-Remaining": "1", "X-RateLimit-Scope": "shared"}
            response = self._json(
                {"message": "You are being rate limited.", "retry_after": failure.retry_after, "global": False},
                status=429,
            )
        elif failure is not None:
            failure.times -= 1
            call.status = failure.status
            response = self._json({"message": failure.message, "code": failure.code}, status=failure.status)
        else:
            try:
                if call.route in self._WEBHOOK_ROUTES:
                    headers = self._rate_limit(call)
                response = self._answer(call, params)
            except Refused as refused:
                call.status = refused.status
                response = self._json({"message": refused.message, "code": refused.code}, status=refused.status)
            except RateLimitedError as limited:
                call.status = 429
                self.rate_limited += 1
                headers = limited.headers
                response = self._json(
                    {"message": "You are being rate limited.", "retry_after": limited.retry_after, "global": False},
                    status=429,
                )
        response.headers.update(headers)
        with self._cond:
            self.calls.append(call)
        self._notify()
        if hold is not None:
            hold.times -= 1
            await asyncio.sleep(hold.seconds)
        return response

    _WEBHOOK_ROUTES = ("followup", "edit_message", "delete_message", "get_message")

    def _rate_limit(self, call: Call) -> dict[str, str]:
        """Per interaction token: at most `webhook_rate[0]` requests per `webhook_rate[1]` seconds, else 429."""
        limit, window = self.webhook_rate
        now = time.monotonic()
        hits = [t for t in self._webhook_hits.get(call.token, []) if now - t < window]
        reset_after = (hits[0] + window - now) if hits else window
        headers = {
            "Via": "1.1 google",  # real Discord sends it; discord.py treats a 429 without it as a Cloudflare ban
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Bucket": f"webhook-{abs(hash(call.token)) % 10**8}",
        }
        if len(hits) >= limit:
            self._webhook_hits[call.token] = hits
            headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{reset_after:.3f}"})
            raise RateLimitedError(round(reset_after + 0.001, 3), headers)
        hits.append(now)
        self._webhook_hits[call.token] = hits
        reset_after = hits[0] + window - now
        headers.update(
            {
                "X-RateLimit-Remaining": str(limit - len(hits)),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            }
        )
        return headers

    async def _read_body(self, request: web.Request) -> tuple[dict | None, list[Upload]]:
        if request.content_type == "multipart/form-data":
            body, uploads = None, []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()
                if part.name == "payload_json":
                    body = json.loads(data)
                else:
                    uploads.append(
                        Upload(part.name, part.filename or "", part.headers.get("Content-Type", ""), bytes(data))
                    )
            return body, uploads
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _json(self, data: Any, status: int = 200) -> web.Response:
        # Exactly `application/json`: with a charset, discord.py reads the body as text.
        return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})

    def _sent_for(self, token: str | None) -> Sent | None:
        return next((s for s in self.sent if s.token == token), None)

    def _check_token(self, call: Call) -> Sent:
        sent = self._sent_for(call.token)
        if sent is None or call.token not in self.acknowledged:
            raise Refused(404, 10015, "Unknown Webhook")
        if time.monotonic() - sent.at > self.token_lifetime:
            raise Refused(401, 50027, "Invalid Webhook Token")
        return sent

    def _answer(self, call: Call, params: dict) -> web.Response:
        if call.route == "users_me":
            return self._json({**self.user_payload(self.BOT_ID), "username": "ImageCredits", "bot": True})
        if call.route == "app_info":
            return self._json(
                {
                    "id": str(self.APP_ID),
                    "name": "ImageCredits",
                    "description": "",
                    "icon": None,
                    "bot_public": False,
                    "bot_require_code_grant": False,
                    "owner": self.user_payload(self.OWNER_ID),
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "team": None,
                }
            )
        if call.route == "gateway":
            return self._json({"url": str(self.gateway_url), "shards": 1, "session_start_limit": {}})
        if call.route in ("sync_commands", "list_commands"):
            scope = params.get("guild") or "global"
            if call.route == "sync_commands":
                for command in call.json or []:
                    for choice in (c for o in command.get("options", []) for c in o.get("choices", [])):
                        if not 1 <= len(choice["name"]) <= 100:
                            raise Refused(400, 50035, "Invalid Form Body (choice name must be 1-100 characters)")
                self.commands[scope] = [
                    {
                        **command,
                        "id": str(next(self._ids)),
                        "application_id": str(self.APP_ID),
                        "version": "1",
                        "default_member_permissions": None,
                        **({"guild_id": scope} if scope != "global" else {}),
                    }
                    for command in call.json or []
                ]
            return self._json(self.commands.get(scope, []))
        if call.route in STORE_ROUTE_NAMES:
            return self._store_answer(call, params)
        if call.route == "callback":
            return self._callback(call, params)
        if call.route == "channel_message":
            state = self.states.get(call.message_id)
            if state is None or state.deleted or state.ephemeral:
                raise Refused(404, 10008, "Unknown Message")
            return self._json(self.messages[call.message_id])
        if call.route == "followup":
            self._check_token(call)
            return self._json(self._followup(call))
        if call.route in ("edit_message", "delete_message", "get_message"):
            self._check_token(call)
            message_id = self.originals.get(call.token) if call.message_id == "@original" else call.message_id
            state = self.states.get(message_id)
            if state is None or state.deleted or (call.message_id != "@original" and state.token != call.token):
                raise Refused(404, 10008, "Unknown Message")
            if call.route == "delete_message":
                state.deleted = True
                return web.Response(status=204)
            if call.route == "edit_message":
                body = call.json or {}
                self._validate(body, call.uploads, editing=self.messages[message_id])
                self._edit_message(self.messages[message_id], body, call.uploads)
                state.loading = False
                self._log_public(message_id)
            return self._json(self.messages[message_id])
        call.status = 404
        return self._json({"message": f"The fake does not know {call.method} {call.path}", "code": 0}, status=404)

    def _followup(self, call: Call) -> dict:
        """After a deferral, the first followup takes the "thinking..." message's place (and its visibility)."""
        body = call.json or {}
        original = self.originals.get(call.token)
        state = self.states.get(original) if original else None
        if state is not None and state.loading:
            if state.deleted:
                # Undocumented; Discord has answered it so. A bot must not rely on anything else.
                raise Refused(404, 10008, "Unknown Message")
            self._validate(body, call.uploads, editing=None)
            message = self.messages[original]
            self._edit_message(message, {k: v for k, v in body.items() if k != "flags"}, call.uploads)
            message["flags"] = (message.get("flags", 0) & ~LOADING) | (EPHEMERAL if state.ephemeral else 0)
            state.loading = False
            self._log_public(original)
            return message
        self._validate(body, call.uploads, editing=None)
        ephemeral = bool(int(body.get("flags") or 0) & EPHEMERAL)
        return self._new_message(body, call.uploads, token=call.token, ephemeral=ephemeral)

    def _callback(self, call: Call, params: dict) -> web.Response:
        sent = self._sent_for(call.token)
        if sent is None or time.monotonic() - sent.at > self.initial_response_seconds:
            raise Refused(404, 10062, "Unknown interaction")
        if call.token in self.acknowledged:
            raise Refused(400, 40060, "Interaction has already been acknowledged.")
        body = call.json or {}
        kind = body.get("type")
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        if kind == CHANNEL_MESSAGE:
            self._validate(data, call.uploads, editing=None)
        elif kind == UPDATE_MESSAGE:
            self._validate(data, call.uploads, editing=sent.payload.get("message"))
        elif kind == MODAL:
            # A modal answers a command or a component, never a modal submit; title <= 45, 1-5 rows.
            if sent.payload["type"] == MODAL_SUBMIT:
                raise Refused(400, 50035, "Invalid Form Body (a modal cannot answer a modal submit)")
            if not 1 <= len(data.get("title") or "") <= 45 or not 1 <= len(data.get("custom_id") or "") <= 100:
                raise Refused(400, 50035, "Invalid Form Body (modal title 1-45, custom_id 1-100)")
            if not 1 <= len(data.get("components") or []) <= 5:
                raise Refused(400, 50035, "Invalid Form Body (a modal has 1-5 components)")
        elif kind not in (DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE):
            raise Refused(400, 50035, f"Invalid Form Body (callback type {kind})")
        if kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE) and sent.payload["type"] != 3:
            raise Refused(400, 50035, "Invalid Form Body (only component interactions can update a message)")
        self.acknowledged.add(call.token)
        interaction = {
            "id": params["id"],
            "type": sent.payload["type"],
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(flags & EPHEMERAL),
        }
        answer: dict[str, Any] = {"interaction": interaction}
        if kind == MODAL:
            self.modals[call.token] = data
            return self._json(answer)
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            payload = data if kind == CHANNEL_MESSAGE else {"flags": flags | LOADING}
            message = self._new_message(payload, call.uploads, token=call.token, ephemeral=bool(flags & EPHEMERAL))
            self.states[message["id"]].loading = kind == DEFERRED_CHANNEL_MESSAGE
            self.originals[call.token] = message["id"]
            interaction["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, "message": message}
        else:
            # For a component, the original response of an update is the message the component is on.
            message_id = sent.payload["message"]["id"]
            self.originals[call.token] = message_id
            if kind == UPDATE_MESSAGE:
                self._edit_message(self.messages[message_id], data, call.uploads)
                self._log_public(message_id)
        return self._json(answer)

    def _validate(self, body: dict, uploads: list[Upload], *, editing: dict | None) -> None:
        """Discord's documented limits on a message (create or edit)."""
        content = body.get("content")
        if content is not None and len(content) > MAX_CONTENT:
            raise Refused(400, 50035, f"Invalid Form Body (content: must be {MAX_CONTENT} or fewer in length)")
        for row in body.get("components") or []:
            for item in row.get("components", []):
                custom_id, label, url = item.get("custom_id"), item.get("label"), item.get("url")
                self._validate_premium_button(item)
                if custom_id is not None and not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
                    raise Refused(400, 50035, "Invalid Form Body (custom_id: must be 1-100 in length)")
                if item.get("type") == 2 and (custom_id is None) == (url is None) and item.get("sku_id") is None:
                    raise Refused(400, 50035, "Invalid Form Body (a button needs a custom_id or a url)")
                if label is not None and len(label) > MAX_LABEL:
                    raise Refused(400, 50035, f"Invalid Form Body (label: must be {MAX_LABEL} or fewer in length)")
                if url is not None and len(url) > MAX_URL:
                    raise Refused(400, 50035, f"Invalid Form Body (url: must be {MAX_URL} or fewer in length)")
        if len(uploads) > MAX_ATTACHMENTS:
            raise Refused(400, 50035, f"Invalid Form Body (at most {MAX_ATTACHMENTS} attachments)")
        if any(len(upload.data) > self.attachment_size_limit for upload in uploads):
            raise Refused(413, 40005, "Request entity too large")
        has_something = bool(content or body.get("embeds") or body.get("components") or uploads)
        if editing is None and not has_something:
            raise Refused(400, 50006, "Cannot send an empty message")

    def _log_public(self, message_id: str) -> None:
        state = self.states[message_id]
        if not state.ephemeral:
            self.public_log.append((message_id, state.token, self.messages[message_id].get("content") or ""))

    def _new_message(self, body: dict, uploads: list[Upload], *, token: str | None, ephemeral: bool) -> dict:
        message_id = str(next(self._ids))
        message = {
            "id": message_id,
            "channel_id": str(self.CHANNEL_ID),
            "type": 0,
            "content": "",
            "author": {**self.user_payload(self.BOT_ID), "username": "ImageCredits", "bot": True},
            "attachments": [],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
            "webhook_id": str(self.APP_ID),
            "application_id": str(self.APP_ID),
        }
        self._edit_message(message, body, uploads)
        message["edited_timestamp"] = None
        if ephemeral:
            message["flags"] = int(message.get("flags") or 0) | EPHEMERAL
        self.messages[message_id] = message
        self.states[message_id] = MessageState(token=token, ephemeral=ephemeral)
        self._log_public(message_id)
        return message

    def _edit_message(self, message: dict, body: dict, uploads: list[Upload]) -> None:
        for key in ("content", "embeds", "components", "flags"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        if "attachments" in body or uploads:
            message["attachments"] = []
            for upload in uploads:
                # Served by this fake at /attachments/..., standing in for Discord's CDN (cdn.discordapp.com).
                attachment_id = str(next(self._ids))
                url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{upload.filename}"
                self.cdn_files[attachment_id] = upload
                message["attachments"].append(
                    {
                        "id": attachment_id,
                        "filename": upload.filename,
                        "size": len(upload.data),
                        "url": url,
                        "proxy_url": url,
                        # Discord names the type from the file itself, not from the multipart part's header.
                        "content_type": "image/png" if upload.is_png else upload.content_type,
                    }
                )
        message["edited_timestamp"] = datetime.now(UTC).isoformat()


class RateLimitedError(Exception):
    def __init__(self, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(retry_after)
        self.retry_after, self.headers = retry_after, headers


def redirect_discord_py(fake: FakeDiscord, setattr_: Callable[[object, str, Any], None]) -> None:
    """Point discord.py at the fake: the only two changes, made from the test side (`monkeypatch.setattr`)."""
    import discord.gateway
    import discord.http

    setattr_(discord.http.Route, "BASE", fake.api_base)
    setattr_(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", fake.gateway_url)
